package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"time"

	"liminald/conversation"
)

// lineClient is a synchronous client of the protocol, as a client in any
// language writes one: a request line, then its reply line, on one
// connection, like the Redis peer's client on its one connection. The
// replies it reads are the daemon's own, so it finds their fields by
// name; an error reply is decoded in full.
type lineClient struct {
	nc  net.Conn
	r   *bufio.Reader
	buf []byte
	id  int64
}

func dialLine(ctx context.Context, socket string) (*lineClient, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	return &lineClient{nc: nc, r: bufio.NewReaderSize(nc, 4096)}, nil
}

// call sends a request of op on message msg of conversation conv, with
// more arguments appended by args, and returns the reply line of a success.
// The line is valid until the next call.
func (c *lineClient) call(ctx context.Context, op, conv, msg string, args func([]byte) []byte) ([]byte, error) {
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c.id++
	b := append(c.buf[:0], `{"id":`...)
	b = strconv.AppendInt(b, c.id, 10)
	b = append(b, `,"op":"`...)
	b = append(b, op...)
	b = append(b, `","conversation":`...)
	b = conversation.AppendJSONString(b, conv)
	b = append(b, `,"message_id":`...)
	b = conversation.AppendJSONString(b, msg)
	if args != nil {
		b = args(b)
	}
	b = append(b, "}\n"...)
	c.buf = b
	if _, err := c.nc.Write(b); err != nil {
		return nil, c.ioError(ctx, err)
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return nil, c.ioError(ctx, err)
	}
	if bytes.Contains(line, []byte(`"ok":true`)) {
		return line, nil
	}
	var reply struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal(line, &reply); err != nil || reply.Error.Code == "" {
		return nil, fmt.Errorf("liminald: unexpected reply %q", line)
	}
	if e, ok := ruleErrors[reply.Error.Code]; ok {
		return nil, fmt.Errorf("%w: %s", e, reply.Error.Message)
	}
	return nil, fmt.Errorf("liminald: %s: %s", reply.Error.Code, reply.Error.Message)
}

func (c *lineClient) ioError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// ruleErrors are the error codes of the write rules, as Client errors.
var ruleErrors = map[string]error{
	"unknown_message":  ErrUnknownMessage,
	"already_finished": ErrAlreadyFinished,
	"step_conflict":    ErrStepConflict,
}

// field returns the value of the reply's field name: a number, or a
// string without its quotes.
func field(line []byte, name string) []byte {
	i := bytes.Index(line, []byte(`"`+name+`":`))
	if i < 0 {
		return nil
	}
	v := line[i+len(name)+3:]
	if len(v) > 0 && v[0] == '"' {
		v = v[1:]
		return v[:bytes.IndexByte(v, '"')]
	}
	end := bytes.IndexAny(v, ",}")
	if end < 0 {
		return nil
	}
	return v[:end]
}

func (c *lineClient) decision(line []byte) (Decision, error) {
	d := Decision{Action: string(field(line, "decision"))}
	switch d.Action {
	case "start":
		if seq := field(line, "seq"); seq != nil { // a decide's start has none
			var err error
			d.Seq, err = strconv.ParseInt(string(seq), 10, 64)
			return d, err
		}
		return d, nil
	case "resume":
		from, err := strconv.ParseUint(string(field(line, "resume_from")), 10, 32)
		d.ResumeFrom = uint32(from)
		return d, err
	case "skip":
		return d, nil
	}
	return d, fmt.Errorf("liminald: no decision in %q", line)
}

func (c *lineClient) Receive(ctx context.Context, conv, msg string, receivedAt int64) (Decision, error) {
	line, err := c.call(ctx, "receive", conv, msg, func(b []byte) []byte {
		return strconv.AppendInt(append(b, `,"received_at":`...), receivedAt, 10)
	})
	if err != nil {
		return Decision{}, err
	}
	return c.decision(line)
}

func (c *lineClient) Decide(ctx context.Context, conv, msg string) (Decision, error) {
	line, err := c.call(ctx, "decide", conv, msg, nil)
	if err != nil {
		return Decision{}, err
	}
	return c.decision(line)
}

func (c *lineClient) Start(ctx context.Context, conv, msg string) error {
	_, err := c.call(ctx, "start", conv, msg, nil)
	return err
}

func (c *lineClient) Step(ctx context.Context, conv, msg string, index uint32, output []byte) error {
	_, err := c.call(ctx, "step", conv, msg, func(b []byte) []byte {
		b = strconv.AppendUint(append(b, `,"step_index":`...), uint64(index), 10)
		b = append(b, `,"output":"`...)
		b = base64.StdEncoding.AppendEncode(b, output)
		return append(b, '"')
	})
	return err
}

func (c *lineClient) Finish(ctx context.Context, conv, msg string) error {
	_, err := c.call(ctx, "finish", conv, msg, nil)
	return err
}

func (c *lineClient) Close() error { return c.nc.Close() }
