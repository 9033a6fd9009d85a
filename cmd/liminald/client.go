package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"liminald/conversation"
	"liminald/ipc"
)

// The flags the client commands share.
var (
	socketFlag  = &cli.StringFlag{Name: "socket", Usage: "the daemon's unix socket `PATH`", DefaultText: "as serve: $LIMINAL_SOCKET, the config file, the default path"}
	jsonFlag    = &cli.BoolFlag{Name: "json", Usage: "print the reply as JSON, for scripts"}
	timeoutFlag = &cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "give up after `DURATION`"}

	// expectedSeqFlag is the optimistic concurrency check of the commands
	// that append an event; withExpectedSeq puts it in the request.
	expectedSeqFlag = &cli.Int64Flag{Name: "expected-seq", Value: -1, DefaultText: "none", Usage: "append only at this `SEQ` (optimistic concurrency)"}

	// tokenFlag fences step, finish and fail; withToken puts it in the
	// request.
	tokenFlag = &cli.Int64Flag{Name: "token", Value: -1, DefaultText: "none", Usage: "fence the write: refuse it unless `TOKEN`, as start answered it, is still the message's"}

	// fingerprintFlag, sentAtFlag and withStepsFlag are the optional
	// arguments of receive, decide and explain; withDelivery puts them in
	// the request.
	fingerprintFlag = &cli.StringFlag{Name: "fingerprint", DefaultText: "none", Usage: "`FP` names the payload (such as its sha256); refuse a message id received with another"}
	sentAtFlag      = &cli.Int64Flag{Name: "sent-at", DefaultText: "none",
		Usage: "when the message was first produced (such as its broker's timestamp), in epoch `MS`: one the conversation does not know, sent at or before its forgotten_before, is decided forgotten"}
	withStepsFlag = &cli.BoolFlag{Name: "with-steps", Usage: "with a resume, answer the completed steps and their outputs too"}
)

// clientFlags returns the flags every client command takes, then more.
func clientFlags(more ...cli.Flag) []cli.Flag {
	return append([]cli.Flag{socketFlag, configFlag, jsonFlag, timeoutFlag}, more...)
}

// request is a protocol request built from the command line.
type request map[string]any

// messageRequest is a request of op for the CONV MSG arguments. Returns a
// usage error unless there are exactly two arguments.
func messageRequest(c *cli.Context, op string) (request, error) {
	if c.NArg() != 2 {
		return nil, usagef("%s takes CONV MSG, got %d arguments", op, c.NArg())
	}
	return request{"op": op, "conversation": c.Args().Get(0), "message_id": c.Args().Get(1)}, nil
}

// withExpectedSeq adds --expected-seq to r when one was given.
func withExpectedSeq(c *cli.Context, r request) request {
	if c.Int64(expectedSeqFlag.Name) >= 0 {
		r["expected_seq"] = c.Int64(expectedSeqFlag.Name)
	}
	return r
}

// withToken adds --token to r when one was given.
func withToken(c *cli.Context, r request) request {
	if c.Int64(tokenFlag.Name) >= 0 {
		r["token"] = c.Int64(tokenFlag.Name)
	}
	return r
}

// withDelivery adds --fingerprint, --sent-at and --with-steps to r when
// they were given.
func withDelivery(c *cli.Context, r request) request {
	if c.IsSet(fingerprintFlag.Name) {
		r["fingerprint"] = c.String(fingerprintFlag.Name)
	}
	if c.IsSet(sentAtFlag.Name) {
		r["sent_at"] = c.Int64(sentAtFlag.Name)
	}
	if c.Bool(withStepsFlag.Name) {
		r["with_steps"] = true
	}
	return r
}

// leaseMS returns the duration flag name, a lease, in whole milliseconds
// rounded up. Returns a usage error unless it is from 1ms to 24h.
func leaseMS(c *cli.Context, name string) (int64, error) {
	d := c.Duration(name)
	if d < time.Millisecond || d > conversation.MaxLeaseMS*time.Millisecond {
		return 0, usagef("--%s %v: must be from 1ms to 24h", name, d)
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond), nil
}

// dial connects to the daemon the way serve finds its socket. Returns the
// errors of resolve, and an *ipc.Error with the code unavailable when the
// daemon cannot be reached.
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
	rep, err := ask(c, r)
	if err != nil {
		return err
	}
	rep.print(c, print)
	return nil
}

// reply is a success reply of the daemon: the line as it came, and its
// fields decoded with UseNumber.
type reply struct {
	line   []byte
	fields map[string]any
}

// print prints rep: as it came with --json, else with print.
func (rep reply) print(c *cli.Context, print func(io.Writer, map[string]any)) {
	if c.Bool("json") {
		fmt.Fprintf(c.App.Writer, "%s\n", rep.line)
		return
	}
	print(c.App.Writer, rep.fields)
}

// ask sends r and returns the reply, for a command that looks at it before
// printing it. Returns the errors of dial and roundTrip.
func ask(c *cli.Context, r request) (reply, error) {
	cl, err := dial(c)
	if err != nil {
		return reply{}, err
	}
	defer cl.Close()
	line, err := roundTrip(c, cl, r)
	if err != nil {
		return reply{}, err
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return reply{}, fmt.Errorf("reply: %w", err)
	}
	return reply{line: line, fields: m}, nil
}

// roundTrip sends r within --timeout. A failure reply comes back as an
// *ipc.Error for run to print (its code and message, on stderr); with
// --json the reply line is printed on stdout first.
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
	}
	return reply, err
}
