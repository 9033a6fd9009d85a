package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"time"
	"unicode/utf8"

	"liminald/conversation"
)

// The printers of the readable output: each prints one kind of reply,
// decoded with UseNumber, to w. With --json the reply is printed as it
// came instead.

// printDecision prints the reply of receive or decide.
func printDecision(w io.Writer, m map[string]any) {
	switch m["decision"] {
	case "start":
		if seq, ok := jsonNumber(m["seq"]); ok {
			fmt.Fprintf(w, "start (message_received at seq %d)\n", seq)
			return
		}
		fmt.Fprintln(w, "start")
	case "resume":
		from, _ := jsonNumber(m["resume_from"])
		fmt.Fprintf(w, "resume from step %d\n", from)
	default:
		fmt.Fprintln(w, m["decision"])
	}
}

// printAck prints the reply of a write: the seq of its event.
func printAck(w io.Writer, m map[string]any) {
	seq, _ := jsonNumber(m["seq"])
	if m["duplicate"] == true {
		fmt.Fprintf(w, "duplicate of seq %d (nothing appended)\n", seq)
		return
	}
	fmt.Fprintf(w, "appended at seq %d\n", seq)
}

// printConversationState prints the reply of state for a conversation.
func printConversationState(w io.Writer, m map[string]any) {
	next, _ := jsonNumber(m["next_seq"])
	fmt.Fprintf(w, "next_seq     %d\n", next)
	counts, _ := m["messages"].(map[string]any)
	for _, k := range []string{"received", "in_progress", "errored", "finished", "total"} {
		n, _ := jsonNumber(counts[k])
		fmt.Fprintf(w, "%-12s %d\n", k, n)
	}
}

// printMessageState prints the reply of state for a message.
func printMessageState(w io.Writer, m map[string]any) {
	fmt.Fprintf(w, "status       %v\n", m["status"])
	if at, ok := jsonNumber(m["received_at"]); ok {
		fmt.Fprintf(w, "received_at  %s\n", time.UnixMilli(at).UTC().Format(time.RFC3339Nano))
	}
	if last, ok := jsonNumber(m["last_completed_step"]); ok {
		fmt.Fprintf(w, "last_step    %d\n", last)
	} else {
		fmt.Fprintf(w, "last_step    none\n")
	}
	if e, ok := m["error"].(string); ok {
		fmt.Fprintf(w, "error        %q\n", e)
	}
	steps, _ := m["steps"].([]any)
	for _, s := range steps {
		step, _ := s.(map[string]any)
		index, _ := jsonNumber(step["step_index"])
		out, _ := step["output"].(string)
		b, err := base64.StdEncoding.DecodeString(out)
		if err != nil {
			b = []byte(out)
		}
		fmt.Fprintf(w, "step %-7d %s\n", index, showBytes(b))
	}
}

// printStats prints the reply of stats.
func printStats(w io.Writer, m map[string]any) {
	printMap(w, "", m)
}

// printMap prints a reply's fields as sorted "key value" lines, nested
// objects with dotted keys.
func printMap(w io.Writer, prefix string, m map[string]any) {
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != "id" && k != "ok" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if sub, ok := m[k].(map[string]any); ok {
			printMap(w, prefix+k+".", sub)
			continue
		}
		fmt.Fprintf(w, "%-24s %v\n", prefix+k, m[k])
	}
}

// printEvent prints e as its event object (--json) or as one readable line.
func printEvent(w io.Writer, e *conversation.Event, asJSON bool) {
	if asJSON {
		w.Write(append(e.AppendJSON(nil), '\n'))
		return
	}
	ts := time.UnixMilli(e.TS).UTC().Format("2006-01-02T15:04:05.000Z")
	line := fmt.Sprintf("%s %s #%d (pos %d) %-19s %s", ts, e.Conversation, e.Seq, e.Pos, e.Type, e.MessageID)
	switch e.Type {
	case conversation.StepCompleted:
		line += fmt.Sprintf(" step %d output %s", e.StepIndex, showBytes(e.Output))
	case conversation.ErrorOccurred:
		line += fmt.Sprintf(" error %q", e.Error)
	case conversation.MessageReceived:
		line += " received " + time.UnixMilli(e.ReceivedAt).UTC().Format(time.RFC3339Nano)
	}
	fmt.Fprintln(w, line)
}

// showBytes shows b as quoted text when it is printable UTF-8, else as
// base64.
func showBytes(b []byte) string {
	if utf8.Valid(b) && len(b) <= 200 {
		printable := true
		for _, r := range string(b) {
			if r < 0x20 && r != '\t' {
				printable = false
				break
			}
		}
		if printable {
			return fmt.Sprintf("%q", b)
		}
	}
	return "base64:" + base64.StdEncoding.EncodeToString(b)
}

// jsonNumber returns v, a number decoded with UseNumber, as an int64.
func jsonNumber(v any) (int64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	i, err := n.Int64()
	return i, err == nil
}
