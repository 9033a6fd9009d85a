package main

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"liminald/conversation"
)

// The printers of the readable output: each prints one kind of reply,
// decoded with UseNumber, to w. With --json the reply is printed as it
// came instead.

// printDecision prints the reply of receive or decide: the decision, and
// the completed steps a resume answered.
func printDecision(w io.Writer, m map[string]any) {
	fmt.Fprintln(w, decisionText(m))
	printSteps(w, m)
}

// decisionText says the decision of a reply of receive, decide or explain
// in a line.
func decisionText(m map[string]any) string {
	switch m["decision"] {
	case "start":
		text := "start"
		if seq, ok := jsonNumber(m["seq"]); ok {
			text = fmt.Sprintf("start (message_received at seq %d)", seq)
		}
		if before, ok := jsonNumber(m["forgotten_before"]); ok {
			text += "; the conversation forgot messages finished up to " + conversation.MillisTime(before)
		}
		return text
	case "skip":
		if m["compacted"] == true {
			return "skip (compacted)"
		}
		return "skip"
	case "forgotten":
		before, _ := jsonNumber(m["forgotten_before"])
		return "forgotten (forgotten before " + conversation.MillisTime(before) + ")"
	case "resume":
		from, _ := jsonNumber(m["resume_from"])
		return fmt.Sprintf("resume from step %d", from)
	case "busy":
		holder := "a worker"
		if worker, ok := m["worker"].(string); ok {
			holder = fmt.Sprintf("worker %q", worker)
		}
		token, _ := jsonNumber(m["token"])
		after, _ := jsonNumber(m["retry_after_ms"])
		return fmt.Sprintf("busy: %s holds it with token %d; retry after %v", holder, token, time.Duration(after)*time.Millisecond)
	case "quarantined":
		attempts, _ := jsonNumber(m["attempts"])
		text := fmt.Sprintf("quarantined after %d attempts", attempts)
		if e, ok := m["error"].(string); ok {
			text += fmt.Sprintf("; last error %q", e)
		}
		return text
	}
	return fmt.Sprint(m["decision"])
}

// printAck prints the reply of a write: the seq of its event, and the
// token and lease a start or renew answered.
func printAck(w io.Writer, m map[string]any) {
	seq, _ := jsonNumber(m["seq"])
	line := fmt.Sprintf("appended at seq %d", seq)
	if m["duplicate"] == true {
		line = fmt.Sprintf("duplicate of seq %d (nothing appended)", seq)
	}
	if token, ok := jsonNumber(m["token"]); ok {
		line += fmt.Sprintf(", token %d", token)
	}
	if until, ok := jsonNumber(m["lease_expires_at"]); ok {
		line += ", leased until " + conversation.MillisTime(until)
	}
	fmt.Fprintln(w, line)
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
	compacted, _ := jsonNumber(m["compacted"])
	fmt.Fprintf(w, "compacted    %d\n", compacted)
	fmt.Fprintf(w, "forgotten    %s\n", forgottenText(m["forgotten_before"]))
}

// forgottenText says a forgotten_before: what a conversation forgot.
func forgottenText(v any) string {
	if before, ok := jsonNumber(v); ok {
		return "before " + conversation.MillisTime(before)
	}
	return "nothing"
}

// printMessageState prints the reply of state for a message: for a
// tombstone, what it keeps.
func printMessageState(w io.Writer, m map[string]any) {
	fmt.Fprintf(w, "status       %v\n", m["status"])
	tombstone := m["compacted"] == true
	if tombstone {
		fmt.Fprintf(w, "compacted    yes (a tombstone: its events, steps and token are gone)\n")
	}
	if at, ok := jsonNumber(m["received_at"]); ok {
		fmt.Fprintf(w, "received_at  %s\n", time.UnixMilli(at).UTC().Format(time.RFC3339Nano))
	}
	if last, ok := jsonNumber(m["last_completed_step"]); ok {
		fmt.Fprintf(w, "last_step    %d\n", last)
	} else if !tombstone {
		fmt.Fprintf(w, "last_step    none\n")
	}
	if e, ok := m["error"].(string); ok {
		fmt.Fprintf(w, "error        %q\n", e)
	}
	attempts, _ := jsonNumber(m["attempts"])
	fmt.Fprintf(w, "attempts     %d\n", attempts)
	if token, ok := jsonNumber(m["token"]); ok {
		fmt.Fprintf(w, "token        %d\n", token)
	} else if !tombstone {
		fmt.Fprintf(w, "token        none\n")
	}
	if worker, ok := m["worker"].(string); ok {
		fmt.Fprintf(w, "worker       %q\n", worker)
	}
	if until, ok := jsonNumber(m["lease_expires_at"]); ok {
		fmt.Fprintf(w, "leased_until %s\n", conversation.MillisTime(until))
	}
	fmt.Fprintf(w, "quarantined  %s\n", yesNo(m["quarantined"] == true))
	if fp, ok := m["fingerprint"].(string); ok {
		fmt.Fprintf(w, "fingerprint  %q\n", fp)
	}
	printSteps(w, m)
}

// printSteps prints the "steps" of a reply, one line each.
func printSteps(w io.Writer, m map[string]any) {
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

// printMessages prints the reply of messages: a table, one line a
// message, and where the next page starts.
func printMessages(w io.Writer, m map[string]any) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "MESSAGE\tSTATUS\tATTEMPTS\tLAST_STEP\tWORKER\tLEASED_UNTIL\tQUARANTINED")
	list, _ := m["messages"].([]any)
	for _, v := range list {
		msg, _ := v.(map[string]any)
		status := fmt.Sprint(msg["status"])
		if msg["compacted"] == true {
			status += " (compacted)"
		}
		attempts, _ := jsonNumber(msg["attempts"])
		last := "none"
		if n, ok := jsonNumber(msg["last_completed_step"]); ok {
			last = fmt.Sprint(n)
		}
		worker := "-"
		if s, ok := msg["worker"].(string); ok {
			worker = s
		}
		until := "-"
		if ms, ok := jsonNumber(msg["lease_expires_at"]); ok {
			until = conversation.MillisTime(ms)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", msg["message_id"], status, attempts, last, worker, until, yesNo(msg["quarantined"] == true))
	}
	tw.Flush()
	if next, ok := m["next"].(string); ok {
		fmt.Fprintf(w, "more: run again with --after %q\n", next)
	}
}

// printExplanation prints the reply of explain: the decision, its rule and
// the reason, then the message's events as a timeline.
func printExplanation(w io.Writer, m map[string]any) {
	fmt.Fprintf(w, "decision  %s\n", decisionText(m))
	fmt.Fprintf(w, "rule      %v\n", m["rule"])
	fmt.Fprintf(w, "reason    %v\n", m["reason"])
	printSteps(w, m)
	var events []conversation.Event
	if raw, err := json.Marshal(m["events"]); err == nil {
		json.Unmarshal(raw, &events)
	}
	if len(events) == 0 && m["compacted"] == true {
		fmt.Fprintln(w, "\nno events: they were compacted")
		return
	}
	if len(events) == 0 {
		fmt.Fprintln(w, "\nno events")
		return
	}
	// Seqs grow, so the last is the widest; event types are at most 19
	// characters, as in printEvent.
	width := max(len("SEQ"), len(strconv.FormatInt(events[len(events)-1].Seq, 10)))
	fmt.Fprintf(w, "\n%-*s  %-24s  %-19s  %s\n", width, "SEQ", "TIME", "EVENT", "FIELDS")
	for i := range events {
		e := &events[i]
		line := fmt.Sprintf("%-*d  %s  %-19s  %s", width, e.Seq, conversation.MillisTime(e.TS), e.Type, strings.TrimSpace(eventFields(e, showBytes)))
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
}

// printStats prints the reply of stats, forgotten_before as a time.
func printStats(w io.Writer, m map[string]any) {
	if before, ok := jsonNumber(m["forgotten_before"]); ok {
		m["forgotten_before"] = conversation.MillisTime(before)
	} else if _, ok := m["forgotten_before"]; ok {
		m["forgotten_before"] = "none"
	}
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

// printEvent prints e as its event object (--json) or as one readable line,
// where a step's output is shown in full or, with showBytes, only its size
// when it is long.
func printEvent(w io.Writer, e *conversation.Event, asJSON, full bool) {
	if asJSON {
		w.Write(append(e.AppendJSON(nil), '\n'))
		return
	}
	show := showBytes
	if full {
		show = showAllBytes
	}
	fmt.Fprintf(w, "%s %s #%d (pos %d) %-19s %s%s\n", conversation.MillisTime(e.TS), e.Conversation, e.Seq, e.Pos, e.Type, e.MessageID, eventFields(e, show))
}

// eventFields says the fields of e's type, each after a space, a step's
// output with show.
func eventFields(e *conversation.Event, show func([]byte) string) string {
	var b strings.Builder
	switch e.Type {
	case conversation.MessageReceived:
		b.WriteString(" received " + time.UnixMilli(e.ReceivedAt).UTC().Format(time.RFC3339Nano))
		if e.Fingerprint != "" {
			fmt.Fprintf(&b, " fingerprint %q", e.Fingerprint)
		}
	case conversation.ProcessingStarted:
		if e.Worker != "" {
			fmt.Fprintf(&b, " worker %q", e.Worker)
		}
		if e.LeaseMS > 0 {
			fmt.Fprintf(&b, " lease %v", time.Duration(e.LeaseMS)*time.Millisecond)
		}
	case conversation.StepCompleted:
		fmt.Fprintf(&b, " step %d output %s", e.StepIndex, show(e.Output))
	case conversation.ErrorOccurred:
		fmt.Fprintf(&b, " error %q", e.Error)
	case conversation.LeaseRenewed:
		fmt.Fprintf(&b, " token %d lease %v", e.Token, time.Duration(e.LeaseMS)*time.Millisecond)
	case conversation.MessageReleased:
		if e.Reason != "" {
			fmt.Fprintf(&b, " reason %q", e.Reason)
		}
	}
	return b.String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// shortBytes is the longest output the readable output shows: a longer
// one is shown as its size (--json, or events --full, show it all).
const shortBytes = 200

// showBytes shows b as quoted text when it is printable UTF-8, else as
// hex; when it is longer than shortBytes, as its size.
func showBytes(b []byte) string {
	if len(b) > shortBytes {
		return byteSize(len(b))
	}
	return showAllBytes(b)
}

// showAllBytes shows all of b: as quoted text when it is printable UTF-8,
// else as hex.
func showAllBytes(b []byte) string {
	if utf8.Valid(b) {
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
	return "hex:" + hex.EncodeToString(b)
}

// byteSize says n bytes in binary units: 512 B, 2.0 MiB.
func byteSize(n int) string {
	if n < 1<<10 {
		return fmt.Sprintf("%d B", n)
	}
	size, unit := float64(n)/(1<<10), 0
	for size >= 1<<10 && unit < 2 {
		size /= 1 << 10
		unit++
	}
	return fmt.Sprintf("%.1f %s", size, [...]string{"KiB", "MiB", "GiB"}[unit])
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
