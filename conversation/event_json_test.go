package conversation

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// jsonEvents are events of each type, with the fields that belong to them.
var jsonEvents = []struct {
	name     string
	e        Event
	keys     []string // the fields of its event object besides the common ones
	optional []string // those of keys that an event object may leave out
}{
	{"MessageReceived", Event{Conversation: "c", Seq: 0, Pos: 1, TS: 1732672000000, Type: MessageReceived, MessageID: "m", ReceivedAt: 1732671999999}, []string{"received_at"}, nil},
	{"ProcessingStarted", Event{Conversation: "c", Seq: 1, Pos: 4, TS: 1732672000001, Type: ProcessingStarted, MessageID: "m"}, nil, nil},
	{"StepCompleted", Event{Conversation: "c", Seq: 2, Pos: 7, TS: 1732672000123, Type: StepCompleted, MessageID: "m", StepIndex: 0, Output: []byte("hi")}, []string{"step_index", "output"}, nil},
	{"StepCompletedBinary", Event{Conversation: "c", Seq: 3, Pos: 9, TS: 1732672000124, Type: StepCompleted, MessageID: "m", StepIndex: MaxStepIndex, Output: []byte{0xfb, 0xff, 0x00, 0x3e, 0x3f}}, []string{"step_index", "output"}, nil},
	{"ProcessingFinished", Event{Conversation: "c", Seq: 4, Pos: 12, TS: 1732672000200, Type: ProcessingFinished, MessageID: "m"}, nil, nil},
	{"ErrorOccurred", Event{Conversation: "c", Seq: 5, Pos: 13, TS: 1732672000300, Type: ErrorOccurred, MessageID: "m", Error: "disk \"full\"\n\tat line 3 \\ <oops> ✗"}, []string{"error"}, nil},
	{"TrickyNames", Event{Conversation: `conv "1" \ 日本`, Seq: 1 << 62, Pos: 1<<63 - 1, TS: 0, Type: ProcessingStarted, MessageID: "msg\u2028😀"}, nil, nil},

	// Protocol 2 (SPEC §7): two types, and optional fields of two others.
	{"MessageReceivedWithFingerprint", Event{Conversation: "c", Seq: 6, Pos: 14, TS: 1732672000400, Type: MessageReceived, MessageID: "m2", ReceivedAt: 7, Fingerprint: "sha256:\"9f86d0\"\n"}, []string{"received_at", "fingerprint"}, []string{"fingerprint"}},
	{"ProcessingStartedWithWorkerAndLease", Event{Conversation: "c", Seq: 7, Pos: 15, TS: 1732672000401, Type: ProcessingStarted, MessageID: "m2", Worker: "worker \"1\" 😀", LeaseMS: MaxLeaseMS}, []string{"worker", "lease_ms"}, []string{"worker", "lease_ms"}},
	{"ProcessingStartedWithWorker", Event{Conversation: "c", Seq: 8, Pos: 16, TS: 1732672000402, Type: ProcessingStarted, MessageID: "m2", Worker: "w"}, []string{"worker"}, []string{"worker"}},
	{"ProcessingStartedWithLease", Event{Conversation: "c", Seq: 9, Pos: 17, TS: 1732672000403, Type: ProcessingStarted, MessageID: "m2", LeaseMS: 1}, []string{"lease_ms"}, []string{"lease_ms"}},
	{"LeaseRenewed", Event{Conversation: "c", Seq: 10, Pos: 18, TS: 1732672000404, Type: LeaseRenewed, MessageID: "m2", Token: 9, LeaseMS: 30_000}, []string{"token", "lease_ms"}, nil},
	{"LeaseRenewedLargest", Event{Conversation: "c", Seq: 1<<63 - 1, Pos: 19, TS: 1732672000405, Type: LeaseRenewed, MessageID: "m2", Token: 1<<63 - 2, LeaseMS: MaxLeaseMS}, []string{"token", "lease_ms"}, nil},
	{"MessageReleased", Event{Conversation: "c", Seq: 11, Pos: 20, TS: 1732672000406, Type: MessageReleased, MessageID: "m2"}, nil, nil},
	{"MessageReleasedWithReason", Event{Conversation: "c", Seq: 12, Pos: 21, TS: 1732672000407, Type: MessageReleased, MessageID: "m2", Reason: "parser fixed in \"v2\"\n\tsee #12"}, []string{"reason"}, []string{"reason"}},
}

// leaveOut zeroes the optional field key of e, as an event object without
// it decodes.
func leaveOut(e Event, key string) Event {
	switch key {
	case "fingerprint":
		e.Fingerprint = ""
	case "worker":
		e.Worker = ""
	case "lease_ms":
		e.LeaseMS = 0
	case "reason":
		e.Reason = ""
	}
	return e
}

var commonKeys = []string{"conversation", "seq", "pos", "ts", "type", "message_id"}

func TestEvent_AppendJSON(t *testing.T) {
	t.Run("SpecExample", func(t *testing.T) {
		e := Event{Conversation: "c", Seq: 2, Pos: 7, TS: 1732672000123, Type: StepCompleted, MessageID: "m", StepIndex: 0, Output: []byte("hi")}
		want := `{"conversation":"c","seq":2,"pos":7,"ts":1732672000123,"type":"step_completed","message_id":"m","step_index":0,"output":"aGk="}`
		if got := string(e.AppendJSON(nil)); got != want {
			t.Errorf("AppendJSON(%+v) = %s, want %s", e, got, want)
		}
	})
	for _, tt := range jsonEvents {
		t.Run(tt.name+"/RoundTrip", func(t *testing.T) {
			b := tt.e.AppendJSON(nil)
			if !json.Valid(b) {
				t.Fatalf("AppendJSON(%+v) = %s, not valid JSON", tt.e, b)
			}
			var got Event
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("json.Unmarshal(%s) = %v", b, err)
			}
			if !reflect.DeepEqual(got, tt.e) {
				t.Errorf("json.Unmarshal(AppendJSON(%+v)) = %+v, want the event back", tt.e, got)
			}
			m, err := tt.e.MarshalJSON()
			if err != nil || !bytes.Equal(m, b) {
				t.Errorf("MarshalJSON(%+v) = %s, %v; want %s", tt.e, m, err, b)
			}
			// json.Marshal re-escapes what MarshalJSON wrote (HTML
			// characters, U+2028), but the value is the same.
			var viaMarshal Event
			if m, err := json.Marshal(tt.e); err != nil || json.Unmarshal(m, &viaMarshal) != nil || !reflect.DeepEqual(viaMarshal, tt.e) {
				t.Errorf("json.Unmarshal(json.Marshal(%+v)) = %+v, %v; want the event back", tt.e, viaMarshal, err)
			}
		})
		t.Run(tt.name+"/Fields", func(t *testing.T) {
			b := tt.e.AppendJSON(nil)
			var obj map[string]any
			if err := json.Unmarshal(b, &obj); err != nil {
				t.Fatalf("json.Unmarshal(%s) = %v", b, err)
			}
			got := slices.Sorted(maps.Keys(obj))
			want := slices.Sorted(slices.Values(append(slices.Clone(commonKeys), tt.keys...)))
			if !slices.Equal(got, want) {
				t.Errorf("AppendJSON(%+v) has fields %q, want %q", tt.e, got, want)
			}
			if obj["type"] != tt.e.Type.String() {
				t.Errorf("AppendJSON(%+v) has type %v, want %q", tt.e, obj["type"], tt.e.Type.String())
			}
		})
	}
	t.Run("Protocol2Examples", func(t *testing.T) {
		for _, tt := range []struct {
			e    Event
			want string
		}{
			{Event{Conversation: "c", Seq: 0, Pos: 1, TS: 5, Type: MessageReceived, MessageID: "m", ReceivedAt: 4, Fingerprint: "sha256:a"},
				`{"conversation":"c","seq":0,"pos":1,"ts":5,"type":"message_received","message_id":"m","received_at":4,"fingerprint":"sha256:a"}`},
			{Event{Conversation: "c", Seq: 1, Pos: 2, TS: 6, Type: ProcessingStarted, MessageID: "m", Worker: "w1", LeaseMS: 30000},
				`{"conversation":"c","seq":1,"pos":2,"ts":6,"type":"processing_started","message_id":"m","worker":"w1","lease_ms":30000}`},
			{Event{Conversation: "c", Seq: 2, Pos: 3, TS: 7, Type: LeaseRenewed, MessageID: "m", Token: 1, LeaseMS: 30000},
				`{"conversation":"c","seq":2,"pos":3,"ts":7,"type":"lease_renewed","message_id":"m","token":1,"lease_ms":30000}`},
			{Event{Conversation: "c", Seq: 3, Pos: 4, TS: 8, Type: MessageReleased, MessageID: "m", Reason: "fixed"},
				`{"conversation":"c","seq":3,"pos":4,"ts":8,"type":"message_released","message_id":"m","reason":"fixed"}`},
			{Event{Conversation: "c", Seq: 3, Pos: 4, TS: 8, Type: MessageReleased, MessageID: "m"},
				`{"conversation":"c","seq":3,"pos":4,"ts":8,"type":"message_released","message_id":"m"}`},
			// Fields of other types are not written.
			{Event{Conversation: "c", Seq: 4, Pos: 5, TS: 9, Type: ProcessingFinished, MessageID: "m", Fingerprint: "f", Worker: "w", LeaseMS: 1, Token: 1, Reason: "r"},
				`{"conversation":"c","seq":4,"pos":5,"ts":9,"type":"processing_finished","message_id":"m"}`},
		} {
			if got := string(tt.e.AppendJSON(nil)); got != tt.want {
				t.Errorf("AppendJSON(%+v) = %s, want %s", tt.e, got, tt.want)
			}
		}
	})
	t.Run("OutputIsStandardBase64", func(t *testing.T) {
		out := []byte{0xfb, 0xff, 0xbf, 0x00} // "+/+/AA==" in standard base64, "-_-_AA==" in URL base64
		e := Event{Conversation: "c", Type: StepCompleted, MessageID: "m", Output: out}
		var obj struct{ Output string }
		if err := json.Unmarshal(e.AppendJSON(nil), &obj); err != nil {
			t.Fatal(err)
		}
		if want := "+/+/AA=="; obj.Output != want || obj.Output != base64.StdEncoding.EncodeToString(out) {
			t.Errorf("AppendJSON(output %x) has output %q, want %q", out, obj.Output, want)
		}
	})
	t.Run("EmptyOutput", func(t *testing.T) {
		for _, out := range [][]byte{nil, {}} {
			e := Event{Conversation: "c", Seq: 3, Type: StepCompleted, MessageID: "m", StepIndex: 1, Output: out}
			b := e.AppendJSON(nil)
			if !bytes.Contains(b, []byte(`,"output":""}`)) {
				t.Errorf("AppendJSON(output %#v) = %s, want an empty output string", out, b)
			}
			var got Event
			if err := json.Unmarshal(b, &got); err != nil || len(got.Output) != 0 || got.StepIndex != 1 {
				t.Errorf("json.Unmarshal(%s) = %+v, %v; want step 1 with empty output", b, got, err)
			}
		}
	})
	t.Run("AppendsToDst", func(t *testing.T) {
		e := jsonEvents[0].e
		prefix := []byte("prefix ")
		got := e.AppendJSON(slices.Clone(prefix))
		if want := append(slices.Clone(prefix), e.AppendJSON(nil)...); !bytes.Equal(got, want) {
			t.Errorf("AppendJSON(%q) = %q, want %q", prefix, got, want)
		}
	})
}

// isFieldOf reports whether key is a field of events of type t, given or
// not.
func isFieldOf(t Type, key string) bool {
	switch t {
	case MessageReceived:
		return key == "fingerprint"
	case ProcessingStarted:
		return key == "worker" || key == "lease_ms"
	case LeaseRenewed:
		return key == "token" || key == "lease_ms"
	case MessageReleased:
		return key == "reason"
	}
	return false
}

// jsonEvent returns the event of jsonEvents named name.
func jsonEvent(tb testing.TB, name string) Event {
	tb.Helper()
	for _, tt := range jsonEvents {
		if tt.name == name {
			return tt.e
		}
	}
	tb.Fatalf("no event %q in jsonEvents", name)
	return Event{}
}

// validEventObject returns the event object of e decoded into a map, so that
// a test can remove or change a field.
func validEventObject(t *testing.T, e *Event) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(e.AppendJSON(nil)))
	d.UseNumber() // keep int64 seq and pos exact
	var obj map[string]any
	if err := d.Decode(&obj); err != nil {
		t.Fatal(err)
	}
	return obj
}

func TestEvent_UnmarshalJSON(t *testing.T) {
	for _, tt := range jsonEvents {
		for _, field := range tt.optional {
			t.Run(tt.name+"/Without_"+field, func(t *testing.T) {
				obj := validEventObject(t, &tt.e)
				delete(obj, field)
				b, _ := json.Marshal(obj)
				var got Event
				if err := json.Unmarshal(b, &got); err != nil || !reflect.DeepEqual(got, leaveOut(tt.e, field)) {
					t.Errorf("json.Unmarshal(%s) = %+v, %v; want %+v", b, got, err, leaveOut(tt.e, field))
				}
			})
		}
		for _, field := range append(slices.Clone(commonKeys), tt.keys...) {
			if field == "pos" || slices.Contains(tt.optional, field) {
				continue // an imported event may leave pos to the store
			}
			t.Run(tt.name+"/Missing_"+field, func(t *testing.T) {
				obj := validEventObject(t, &tt.e)
				delete(obj, field)
				b, _ := json.Marshal(obj)
				var e Event
				err := json.Unmarshal(b, &e)
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != field {
					t.Errorf("json.Unmarshal(%s) = %v, want a *FieldError naming %q", b, err, field)
				}
			})
			t.Run(tt.name+"/Null_"+field, func(t *testing.T) {
				obj := validEventObject(t, &tt.e)
				obj[field] = nil
				b, _ := json.Marshal(obj)
				var e Event
				if err := json.Unmarshal(b, &e); err == nil {
					t.Errorf("json.Unmarshal(%s) = nil, want an error", b)
				}
			})
		}
	}
	invalid := []struct {
		name      string
		e         Event
		field     string
		value     any
		wantField string // "" when any error will do
	}{
		{"UnknownType", jsonEvents[1].e, "type", "processing_paused", "type"},
		{"NegativeSeq", jsonEvents[1].e, "seq", -1, "seq"},
		{"EmptyConversation", jsonEvents[1].e, "conversation", "", "conversation"},
		{"ControlCharMessageID", jsonEvents[1].e, "message_id", "m\n", "message_id"},
		{"LongMessageID", jsonEvents[1].e, "message_id", strings.Repeat("m", MaxNameBytes+1), "message_id"},
		{"NegativeReceivedAt", jsonEvents[0].e, "received_at", -5, "received_at"},
		{"EmptyError", jsonEvents[5].e, "error", "", "error"},
		{"StepIndexTooLarge", jsonEvents[2].e, "step_index", MaxStepIndex + 1, ""},
		{"NegativeStepIndex", jsonEvents[2].e, "step_index", -1, ""},
		{"OutputNotBase64", jsonEvents[2].e, "output", "not base64!", ""},
		{"SeqNotInteger", jsonEvents[1].e, "seq", "1", ""},
		{"LongFingerprint", jsonEvent(t, "MessageReceivedWithFingerprint"), "fingerprint", strings.Repeat("f", MaxFingerprintBytes+1), "fingerprint"},
		{"ControlCharWorker", jsonEvent(t, "ProcessingStartedWithWorker"), "worker", "w\u0000", "worker"},
		{"LongWorker", jsonEvent(t, "ProcessingStartedWithWorker"), "worker", strings.Repeat("w", MaxNameBytes+1), "worker"},
		{"NegativeStartLease", jsonEvent(t, "ProcessingStartedWithLease"), "lease_ms", -1, "lease_ms"},
		{"StartLeaseOverADay", jsonEvent(t, "ProcessingStartedWithLease"), "lease_ms", MaxLeaseMS + 1, "lease_ms"},
		{"StartLeaseNotInteger", jsonEvent(t, "ProcessingStartedWithLease"), "lease_ms", 1.5, ""},
		{"RenewTokenZero", jsonEvent(t, "LeaseRenewed"), "token", 0, "token"},
		{"RenewTokenNegative", jsonEvent(t, "LeaseRenewed"), "token", -9, "token"},
		{"RenewLeaseZero", jsonEvent(t, "LeaseRenewed"), "lease_ms", 0, "lease_ms"},
		{"RenewLeaseOverADay", jsonEvent(t, "LeaseRenewed"), "lease_ms", MaxLeaseMS + 1, "lease_ms"},
		{"LongReason", jsonEvent(t, "MessageReleasedWithReason"), "reason", strings.Repeat("r", MaxErrorBytes+1), "reason"},
		{"ReasonNotString", jsonEvent(t, "MessageReleasedWithReason"), "reason", 3, ""},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			obj := validEventObject(t, &tt.e)
			obj[tt.field] = tt.value
			b, _ := json.Marshal(obj)
			var e Event
			err := json.Unmarshal(b, &e)
			if err == nil {
				t.Fatalf("json.Unmarshal(%s) = nil, want an error", b)
			}
			var fe *FieldError
			if tt.wantField != "" && (!errors.As(err, &fe) || fe.Field != tt.wantField) {
				t.Errorf("json.Unmarshal(%s) = %v, want a *FieldError naming %q", b, err, tt.wantField)
			}
		})
	}
	t.Run("IgnoresFieldsOfOtherTypesInProtocol2", func(t *testing.T) {
		foreign := map[string]any{"fingerprint": "f", "worker": "w", "lease_ms": 5, "token": 3, "reason": "r"}
		for _, tt := range jsonEvents {
			obj := validEventObject(t, &tt.e)
			for k, v := range foreign {
				if _, own := obj[k]; !own && !slices.Contains(tt.keys, k) && !isFieldOf(tt.e.Type, k) {
					obj[k] = v
				}
			}
			b, _ := json.Marshal(obj)
			var got Event
			if err := json.Unmarshal(b, &got); err != nil || !reflect.DeepEqual(got, tt.e) {
				t.Errorf("json.Unmarshal(%s) = %+v, %v; want %+v", b, got, err, tt.e)
			}
		}
	})
	t.Run("IgnoresFieldsOfOtherTypes", func(t *testing.T) {
		b := []byte(`{"conversation":"c","seq":1,"pos":4,"ts":1732672000001,"type":"processing_started","message_id":"m","error":"x","output":"aGk=","step_index":3,"received_at":9,"extra":true}`)
		var got Event
		if err := json.Unmarshal(b, &got); err != nil || !reflect.DeepEqual(got, jsonEvents[1].e) {
			t.Errorf("json.Unmarshal(%s) = %+v, %v; want %+v", b, got, err, jsonEvents[1].e)
		}
	})
}

// jsonStrings are tricky strings that AppendJSONString writes exactly as
// encoding/json's Marshal does.
var jsonStrings = []string{
	"",
	"plain",
	`say "hi"`,
	`back\slash\`,
	`\"`,
	"/slash/",
	"new\nline\rcarriage\ttab",
	"\x00\x01\x07\x0b\x0e\x1a\x1f",
	"\x7f",
	"\u0085 C1 control",
	"é",
	"日本語",
	"😀 emoji, 👩‍👩‍👧 family",
	"\ufffd literal replacement",
	"\ufeff byte order mark",
	"\xff",
	"a\xc3",
	"\xc3\x28",
	"\xed\xa0\x80 surrogate",
	"\xf4\x90\x80\x80 above U+10FFFF",
	"\xc0\xaf overlong",
	"ok\xe2\x82 truncated",
	"mixed \xff\"\\\n日\x01",
}

// jsonStringsSpelledOtherwise are strings that AppendJSONString writes with
// the same value as encoding/json's Marshal but spelled differently: Marshal
// escapes HTML characters, U+2028 and U+2029, and writes \b and \f short.
var jsonStringsSpelledOtherwise = []struct {
	s, want string
}{
	{"\b", `"\u0008"`},
	{"\f", `"\u000c"`},
	{"<a href='x'>&amp;</a>", `"<a href='x'>&amp;</a>"`},
	{"\u2028\u2029", "\"\u2028\u2029\""},
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range jsonStrings {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("AppendJSONString(%q) = %s, want %s", s, got, want)
		}
	}
	for _, tt := range jsonStringsSpelledOtherwise {
		got := AppendJSONString(nil, tt.s)
		if string(got) != tt.want {
			t.Errorf("AppendJSONString(%q) = %s, want %s", tt.s, got, tt.want)
		}
		var back string
		if err := json.Unmarshal(got, &back); err != nil || back != tt.s {
			t.Errorf("json.Unmarshal(AppendJSONString(%q)) = %q, %v; want the string back", tt.s, back, err)
		}
	}
	t.Run("InvalidUTF8", func(t *testing.T) {
		// Each byte that is not part of a valid sequence is one U+FFFD.
		for _, tt := range []struct{ s, want string }{
			{"\xff", "\ufffd"},
			{"\x80\x80", "\ufffd\ufffd"},
			{"a\xc3", "a\ufffd"},
			{"\xed\xbf\xbf", "\ufffd\ufffd\ufffd"},
			{"\xf8\x88\x80\x80\x80", strings.Repeat("\ufffd", 5)},
			{"\xe2\x82 x", "\ufffd\ufffd x"},
		} {
			got := AppendJSONString(nil, tt.s)
			var back string
			if !json.Valid(got) || !utf8.Valid(got) || json.Unmarshal(got, &back) != nil || back != tt.want {
				t.Errorf("AppendJSONString(%q) = %q, decoding to %q; want valid JSON in valid UTF-8 decoding to %q", tt.s, got, back, tt.want)
			}
		}
	})
	t.Run("AppendsToDst", func(t *testing.T) {
		got := AppendJSONString([]byte(`{"k":`), "v\n")
		if want := `{"k":"v\n"`; string(got) != want {
			t.Errorf("AppendJSONString(%q, %q) = %q, want %q", `{"k":`, "v\n", got, want)
		}
	})
}

// FuzzAppendJSONString checks that AppendJSONString writes valid JSON for any
// string, that it decodes to the string itself when that is valid UTF-8, and
// to what encoding/json's Marshal decodes to otherwise.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range jsonStrings {
		f.Add(s)
	}
	for _, tt := range jsonStringsSpelledOtherwise {
		f.Add(tt.s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		prefix := []byte(`["x",`)
		got := AppendJSONString(slices.Clone(prefix), s)
		if !bytes.HasPrefix(got, prefix) {
			t.Fatalf("AppendJSONString(%q, %q) = %q, lost its prefix", prefix, s, got)
		}
		got = got[len(prefix):]
		if !json.Valid(got) {
			t.Fatalf("AppendJSONString(%q) = %q, not valid JSON", s, got)
		}
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("json.Unmarshal(AppendJSONString(%q) = %q) = %v", s, got, err)
		}
		if utf8.ValidString(s) && back != s {
			t.Fatalf("json.Unmarshal(AppendJSONString(%q)) = %q, want the string back", s, back)
		}
		m, _ := json.Marshal(s)
		var want string
		if err := json.Unmarshal(m, &want); err != nil || back != want {
			t.Fatalf("json.Unmarshal(AppendJSONString(%q)) = %q, want %q as encoding/json gives", s, back, want)
		}
	})
}
