package main

import (
	"context"
	"errors"
)

// A System is one way of keeping the effectively-once state that the
// harness measures: liminald itself, or a peer a user would pick instead.
// Every System keeps the same promises: a reply only after an fsync'd
// commit (group commit allowed), and a decision atomic with its append.
type System interface {
	// Name is the short name used in tables and plots: "liminald",
	// "sqlite", "redis", "postgres", "liminald-pg1" (2, 4).
	Name() string
	// Start starts the server (if the system has one) with its files in
	// dir, an empty temporary directory the harness owns and removes.
	Start(ctx context.Context, dir string) error
	// Dial opens one client: one connection, used by one goroutine.
	Dial(ctx context.Context) (Client, error)
	// Usage reports the server's CPU seconds and peak memory so far.
	Usage() (Usage, error)
	// Stop stops the server and waits for it to exit.
	Stop() error
}

// Usage is what a system's server processes used.
type Usage struct {
	CPUSeconds float64 // user + system, summed over the server's processes
	PeakRSS    int64   // bytes; for several processes, the peak of their summed PSS
}

// Decision is the answer to a receive or a decide (SPEC §1).
type Decision struct {
	Action     string // "start", "resume" or "skip"
	ResumeFrom uint32 // with "resume"
	Seq        int64  // with "start": the seq of message_received
}

// Client is one connection to a System. Its methods follow SPEC §1–§2:
// the same rules, the same duplicates, the same errors as the daemon.
type Client interface {
	Receive(ctx context.Context, conv, msg string, receivedAt int64) (Decision, error)
	Decide(ctx context.Context, conv, msg string) (Decision, error)
	Start(ctx context.Context, conv, msg string) error
	Step(ctx context.Context, conv, msg string, index uint32, output []byte) error
	Finish(ctx context.Context, conv, msg string) error
	Close() error
}

// Errors every peer returns for the write rules of SPEC §2, so that the
// harness can check that each peer really enforces them.
var (
	ErrUnknownMessage  = errors.New("unknown_message")
	ErrAlreadyFinished = errors.New("already_finished")
	ErrStepConflict    = errors.New("step_conflict")
)
