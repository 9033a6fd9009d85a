package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"liminald/ipc"
)

// The flags every client command takes.
var (
	socketFlag  = &cli.StringFlag{Name: "socket", Usage: "the daemon's unix socket `PATH` (default: as serve: $LIMINAL_SOCKET, the config file, the default path)"}
	jsonFlag    = &cli.BoolFlag{Name: "json", Usage: "print the reply as JSON, for scripts"}
	timeoutFlag = &cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "give up after `DURATION`"}
)

func clientFlags(more ...cli.Flag) []cli.Flag {
	return append([]cli.Flag{socketFlag, configFlag, jsonFlag, timeoutFlag}, more...)
}

// request is a protocol request built from the command line.
type request map[string]any

func clientCommands() []*cli.Command {
	expected := &cli.Int64Flag{Name: "expected-seq", Value: -1, Usage: "append only at this `SEQ` (optimistic concurrency)"}
	withExpected := func(c *cli.Context, r request) request {
		if c.Int64("expected-seq") >= 0 {
			r["expected_seq"] = c.Int64("expected-seq")
		}
		return r
	}
	return []*cli.Command{
		{
			Name: "receive", Usage: "record a delivery of a message and say whether to start, resume or skip it",
			ArgsUsage: "CONV MSG",
			Flags:     clientFlags(expected, &cli.Int64Flag{Name: "received-at", Value: -1, Usage: "when it was received, in epoch `MS` (default: now)"}),
			Action: func(c *cli.Context) error {
				r, err := messageRequest(c, "receive")
				if err != nil {
					return err
				}
				if c.Int64("received-at") >= 0 {
					r["received_at"] = c.Int64("received-at")
				}
				return call(c, withExpected(c, r), printDecision)
			},
		},
		{
			Name: "decide", Usage: "say whether a redelivered message should start, resume or skip, recording nothing",
			ArgsUsage: "CONV MSG", Flags: clientFlags(),
			Action: func(c *cli.Context) error {
				r, err := messageRequest(c, "decide")
				if err != nil {
					return err
				}
				return call(c, r, printDecision)
			},
		},
		writeCommand("start", "record that processing of a message started", expected, withExpected),
		{
			Name: "step", Usage: "record a completed step of a message and its output",
			ArgsUsage: "CONV MSG INDEX",
			Flags: clientFlags(expected,
				&cli.StringFlag{Name: "output", Usage: "the step's output as `TEXT`"},
				&cli.StringFlag{Name: "output-file", Usage: "read the step's output from `FILE` (- for stdin)"},
				&cli.StringFlag{Name: "output-base64", Usage: "the step's output as standard `BASE64`"},
			),
			Action: func(c *cli.Context) error {
				if c.NArg() != 3 {
					return usagef("step takes CONV MSG INDEX, got %d arguments", c.NArg())
				}
				index, err := strconv.ParseUint(c.Args().Get(2), 10, 32)
				if err != nil {
					return usagef("step index %q: must be an integer from 0 to %d", c.Args().Get(2), uint32(math.MaxUint32))
				}
				output, err := stepOutput(c)
				if err != nil {
					return err
				}
				r := request{"op": "step", "conversation": c.Args().Get(0), "message_id": c.Args().Get(1),
					"step_index": index, "output": base64.StdEncoding.EncodeToString(output)}
				return call(c, withExpected(c, r), printAck)
			},
		},
		writeCommand("finish", "record that a message is fully processed", expected, withExpected),
		{
			Name: "fail", Usage: "record that processing of a message failed (it may be retried)",
			ArgsUsage: "CONV MSG",
			Flags:     clientFlags(expected, &cli.StringFlag{Name: "error", Usage: "what went wrong, as `TEXT`", Required: true}),
			Action: func(c *cli.Context) error {
				r, err := messageRequest(c, "fail")
				if err != nil {
					return err
				}
				r["error"] = c.String("error")
				return call(c, withExpected(c, r), printAck)
			},
		},
		{
			Name: "state", Usage: "show a conversation's state, or one message's",
			ArgsUsage: "CONV [MSG]", Flags: clientFlags(),
			Action: func(c *cli.Context) error {
				switch c.NArg() {
				case 1:
					return call(c, request{"op": "state", "conversation": c.Args().Get(0)}, printConversationState)
				case 2:
					return call(c, request{"op": "state", "conversation": c.Args().Get(0), "message_id": c.Args().Get(1)}, printMessageState)
				}
				return usagef("state takes CONV [MSG], got %d arguments", c.NArg())
			},
		},
		eventsCommand(),
		{
			Name: "conversations", Usage: "list the conversations, by name",
			Flags: clientFlags(
				&cli.StringFlag{Name: "after", Usage: "start after the conversation `NAME`"},
				&cli.IntFlag{Name: "limit", Usage: "list at most `N` (default: all)"},
			),
			Action: func(c *cli.Context) error {
				if c.NArg() > 0 {
					return usagef("conversations takes no arguments")
				}
				return listConversations(c)
			},
		},
		{
			Name: "stats", Usage: "show the daemon's figures", Flags: clientFlags(),
			Action: func(c *cli.Context) error { return call(c, request{"op": "stats"}, printStats) },
		},
		{
			Name: "ping", Usage: "check that the daemon answers",
			Flags:  clientFlags(&cli.DurationFlag{Name: "wait", Usage: "keep trying for up to `DURATION` until it answers"}),
			Action: ping,
		},
	}
}

func writeCommand(op, usage string, expected cli.Flag, withExpected func(*cli.Context, request) request) *cli.Command {
	return &cli.Command{
		Name: op, Usage: usage, ArgsUsage: "CONV MSG", Flags: clientFlags(expected),
		Action: func(c *cli.Context) error {
			r, err := messageRequest(c, op)
			if err != nil {
				return err
			}
			return call(c, withExpected(c, r), printAck)
		},
	}
}

// messageRequest is a request of op for the CONV MSG arguments.
func messageRequest(c *cli.Context, op string) (request, error) {
	if c.NArg() != 2 {
		return nil, usagef("%s takes CONV MSG, got %d arguments", op, c.NArg())
	}
	return request{"op": op, "conversation": c.Args().Get(0), "message_id": c.Args().Get(1)}, nil
}

func stepOutput(c *cli.Context) ([]byte, error) {
	given := 0
	for _, f := range []string{"output", "output-file", "output-base64"} {
		if c.IsSet(f) {
			given++
		}
	}
	if given > 1 {
		return nil, usagef("give at most one of --output, --output-file and --output-base64")
	}
	switch {
	case c.IsSet("output-file"):
		name := c.String("output-file")
		if name == "-" {
			return io.ReadAll(c.App.Reader)
		}
		return os.ReadFile(name)
	case c.IsSet("output-base64"):
		b, err := base64.StdEncoding.DecodeString(c.String("output-base64"))
		if err != nil {
			return nil, usagef("--output-base64: %v", err)
		}
		return b, nil
	}
	return []byte(c.String("output")), nil
}

// dial connects to the daemon the way serve finds its socket.
func dial(c *cli.Context) (*ipc.Client, error) {
	cfg, err := resolve(c)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(c.Context, 5*time.Second)
	defer cancel()
	cl, err := ipc.Dial(ctx, cfg.Socket)
	if err != nil {
		return nil, &ipc.Error{Code: ipc.CodeUnavailable, Message: fmt.Sprintf("cannot reach the daemon: %v (is liminald serve running?)", err), Retryable: true}
	}
	return cl, nil
}

// call sends r and prints the reply: as it is with --json, else with
// print. A failure reply is printed (with --json, as the reply line) and
// returned.
func call(c *cli.Context, r request, print func(io.Writer, map[string]any)) error {
	cl, err := dial(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	reply, err := roundTrip(c, cl, r)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		fmt.Fprintf(c.App.Writer, "%s\n", reply)
		return nil
	}
	var m map[string]any
	dec := json.NewDecoder(bytesReader(reply))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return fmt.Errorf("reply: %w", err)
	}
	print(c.App.Writer, m)
	return nil
}

// roundTrip sends r within --timeout. A failure reply is printed as a line
// on stdout with --json (and the command fails quietly); otherwise it is
// returned as an *ipc.Error for run to print.
func roundTrip(c *cli.Context, cl *ipc.Client, r request) ([]byte, error) {
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	reply, err := cl.Do(ctx, b)
	var ie *ipc.Error
	if errors.As(err, &ie) && c.Bool("json") && reply != nil {
		fmt.Fprintf(c.App.Writer, "%s\n", reply)
		fmt.Fprintf(c.App.ErrWriter, "liminald: %s\n", ie.Code)
		return nil, exitError{1}
	}
	return reply, err
}

func ping(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("ping takes no arguments")
	}
	deadline := time.Now().Add(c.Duration("wait"))
	for {
		err := call(c, request{"op": "ping"}, func(w io.Writer, _ map[string]any) { fmt.Fprintln(w, "ok") })
		var ie *ipc.Error
		retry := errors.As(err, &ie) && ie.Retryable
		if err == nil || !retry || time.Now().After(deadline) {
			return err
		}
		select {
		case <-c.Context.Done():
			return c.Context.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func listConversations(c *cli.Context) error {
	cl, err := dial(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	after, left := c.String("after"), c.Int("limit")
	if !c.Bool("json") {
		fmt.Fprintf(c.App.Writer, "%-40s %10s %10s\n", "CONVERSATION", "NEXT_SEQ", "MESSAGES")
	}
	for {
		page := 1000
		if left > 0 {
			page = min(page, left)
		}
		r := request{"op": "conversations", "limit": page}
		if after != "" {
			r["after"] = after
		}
		reply, err := roundTrip(c, cl, r)
		if err != nil {
			return err
		}
		var res struct {
			Conversations []struct {
				Conversation string `json:"conversation"`
				NextSeq      int64  `json:"next_seq"`
				Messages     int64  `json:"messages"`
			} `json:"conversations"`
		}
		if err := json.Unmarshal(reply, &res); err != nil {
			return fmt.Errorf("reply: %w", err)
		}
		for _, conv := range res.Conversations {
			if c.Bool("json") {
				b, _ := json.Marshal(map[string]any{"conversation": conv.Conversation, "next_seq": conv.NextSeq, "messages": conv.Messages})
				fmt.Fprintf(c.App.Writer, "%s\n", b)
			} else {
				fmt.Fprintf(c.App.Writer, "%-40s %10d %10d\n", conv.Conversation, conv.NextSeq, conv.Messages)
			}
			after = conv.Conversation
		}
		if left > 0 {
			if left -= len(res.Conversations); left <= 0 {
				return nil
			}
		}
		if len(res.Conversations) < page {
			return nil
		}
	}
}
