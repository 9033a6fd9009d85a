package storetest

import (
	"fmt"
	"time"

	"liminald/conversation"
)

// Cmd returns a command of op for message m of conversation "c", with no
// expected_seq: what the suite's tests, and a store's own, build on.
func Cmd(op conversation.Op, m string) conversation.Command {
	return conversation.Command{Op: op, Conversation: "c", MessageID: m, ExpectedSeq: conversation.NoExpectedSeq}
}

// Step returns the step of message m of conversation "c" at index with
// output.
func Step(m string, index uint32, output string) conversation.Command {
	c := Cmd(conversation.OpStep, m)
	c.StepIndex, c.Output = index, []byte(output)
	return c
}

// Lifecycle returns the commands of a whole lifecycle of message m of
// conversation conv: received, started, steps 0 to steps-1 with outputs
// "m/i", finished.
func Lifecycle(conv, m string, steps int) []conversation.Command {
	c := func(op conversation.Op) conversation.Command {
		cmd := Cmd(op, m)
		cmd.Conversation = conv
		return cmd
	}
	cmds := []conversation.Command{c(conversation.OpReceive), c(conversation.OpStart)}
	for i := range steps {
		st := c(conversation.OpStep)
		st.StepIndex, st.Output = uint32(i), fmt.Appendf(nil, "%s/%d", m, i)
		cmds = append(cmds, st)
	}
	return append(cmds, c(conversation.OpFinish))
}

func fail(m, text string) conversation.Command {
	c := Cmd(conversation.OpFail, m)
	c.Error = text
	return c
}

func expect(c conversation.Command, seq int64) conversation.Command {
	c.ExpectedSeq = seq
	return c
}

func leasedStart(m, worker string, lease time.Duration) conversation.Command {
	c := Cmd(conversation.OpStart, m)
	c.Worker, c.LeaseMS = worker, lease.Milliseconds()
	return c
}

func withToken(c conversation.Command, token int64) conversation.Command {
	c.Token, c.HasToken = token, true
	return c
}

func renew(m string, token int64, lease time.Duration) conversation.Command {
	c := withToken(Cmd(conversation.OpRenew, m), token)
	c.LeaseMS = lease.Milliseconds()
	return c
}

func receiveSent(m string, sentAt int64) conversation.Command {
	c := Cmd(conversation.OpReceive, m)
	c.SentAt, c.HasSentAt = sentAt, true
	return c
}
