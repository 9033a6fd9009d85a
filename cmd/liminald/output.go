package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"sort"
	"time"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

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

func printAck(w io.Writer, m map[string]any) {
	seq, _ := jsonNumber(m["seq"])
	if m["duplicate"] == true {
		fmt.Fprintf(w, "duplicate of seq %d (nothing appended)\n", seq)
		return
	}
	fmt.Fprintf(w, "appended at seq %d\n", seq)
}

func printConversationState(w io.Writer, m map[string]any) {
	next, _ := jsonNumber(m["next_seq"])
	fmt.Fprintf(w, "next_seq     %d\n", next)
	counts, _ := m["messages"].(map[string]any)
	for _, k := range []string{"received", "in_progress", "errored", "finished", "total"} {
		n, _ := jsonNumber(counts[k])
		fmt.Fprintf(w, "%-12s %d\n", k, n)
	}
}

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
