package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/urfave/cli/v2"

	"liminald/conversation"
	"liminald/ipc"
)

func eventsCommand() *cli.Command {
	return &cli.Command{
		Name:      "events",
		Usage:     "print a conversation's events, or every conversation's",
		ArgsUsage: "[CONV]",
		Flags: clientFlags(
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing events as they are committed"},
			&cli.Int64Flag{Name: "from-seq", Usage: "start at `SEQ` (with CONV)"},
			&cli.Int64Flag{Name: "from-pos", Usage: "start at position `POS` (with --follow)"},
		),
		Description: "With --json each event is one JSON object per line, as in the protocol and liminald export.",
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return usagef("events takes [CONV], got %d arguments", c.NArg())
			}
			conv := c.Args().First()
			if c.IsSet("from-seq") && conv == "" {
				return usagef("--from-seq needs CONV")
			}
			cl, err := dial(c)
			if err != nil {
				return err
			}
			defer cl.Close()
			if c.Bool("follow") {
				return follow(c, cl, conv)
			}
			if conv != "" {
				return readAll(c, cl, conv, c.Int64("from-seq"))
			}
			return readEvery(c, cl)
		},
	}
}

// readAll prints the events of conv from seq from on, page by page.
func readAll(c *cli.Context, cl *ipc.Client, conv string, from int64) error {
	for {
		ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
		events, next, err := cl.Read(ctx, conv, from, 10000)
		cancel()
		if err != nil {
			return err
		}
		for i := range events {
			printEvent(c.App.Writer, &events[i], c.Bool("json"))
		}
		if len(events) == 0 {
			return nil
		}
		from = next
	}
}

// readEvery prints the events of every conversation, conversation by
// conversation.
func readEvery(c *cli.Context, cl *ipc.Client) error {
	after := ""
	for {
		ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
		convs, err := cl.Conversations(ctx, after, 1000)
		cancel()
		if err != nil {
			return err
		}
		for _, conv := range convs {
			if err := readAll(c, cl, conv.Name, 0); err != nil {
				return err
			}
			after = conv.Name
		}
		if len(convs) < 1000 {
			return nil
		}
	}
}

// follow prints the events of a subscription until interrupted, catching up
// first: from --from-seq (default 0) for one conversation, from --from-pos
// (default 0) for every conversation.
func follow(c *cli.Context, cl *ipc.Client, conv string) error {
	var opts []ipc.Option
	switch {
	case c.IsSet("from-pos"):
		opts = append(opts, ipc.FromPos(c.Int64("from-pos")))
	case conv != "":
		opts = append(opts, ipc.FromSeq(c.Int64("from-seq")))
	default:
		opts = append(opts, ipc.FromPos(0))
	}
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	stream, err := cl.Subscribe(ctx, conv, opts...)
	cancel()
	if err != nil {
		return err
	}
	for {
		e, err := stream.Next(c.Context)
		if err != nil {
			var lag *ipc.LaggedError
			if errors.As(err, &lag) {
				return fmt.Errorf("fell behind; run again with --from-pos %d", lag.NextPos)
			}
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
		printEvent(c.App.Writer, &e, c.Bool("json"))
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
