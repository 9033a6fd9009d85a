package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// pgDaemons are the numbers of daemons the liminald-on-PostgreSQL systems
// run on one database: liminald-pg1, liminald-pg2, liminald-pg4.
var pgDaemons = []int{1, 2, 4}

// pgSystemPrefix names the liminald-on-PostgreSQL systems: the prefix and
// the number of daemons.
const pgSystemPrefix = "liminald-pg"

// pgSystemNames are the names of the liminald-on-PostgreSQL systems.
func pgSystemNames() []string {
	names := make([]string, len(pgDaemons))
	for i, n := range pgDaemons {
		names[i] = pgSystemPrefix + strconv.Itoa(n)
	}
	return names
}

// liminaldPGSystem runs n liminald daemons, each on its own socket (the
// sidecars of n hosts), on one database of a PostgreSQL server of its own
// with the settings of the PostgreSQL peer. Clients are spread over the
// daemons in turn. Its usage is the PostgreSQL server's: the figure that
// says when more daemons stop adding throughput.
type liminaldPGSystem struct {
	n       int
	bin     string
	pg      *postgresSystem
	daemons []*liminaldSystem
	next    atomic.Uint64 // the daemon the next Dial goes to
}

// newLiminaldPG returns the system of n daemons of the binary bin on one
// PostgreSQL database.
func newLiminaldPG(bin string, n int) System {
	pg := newPostgres().(*postgresSystem)
	pg.bare = true
	return &liminaldPGSystem{n: n, bin: bin, pg: pg}
}

func (s *liminaldPGSystem) Name() string { return pgSystemPrefix + strconv.Itoa(s.n) }

// Start runs PostgreSQL in dir, then the daemons one after another (the
// first creates the schema), each in a directory of its own in dir.
func (s *liminaldPGSystem) Start(ctx context.Context, dir string) error {
	if err := s.pg.Start(ctx, dir); err != nil {
		return err
	}
	for i := range s.n {
		d := &liminaldSystem{bin: s.bin, db: s.pg.url(), running: running{name: fmt.Sprintf("liminald %d", i), quit: syscall.SIGTERM}}
		ddir := filepath.Join(dir, fmt.Sprintf("d%d", i))
		if err := os.MkdirAll(ddir, 0o755); err != nil {
			return err
		}
		if err := d.Start(ctx, ddir); err != nil {
			return err
		}
		s.daemons = append(s.daemons, d)
	}
	return nil
}

// Dial opens one connection to the next daemon in turn.
func (s *liminaldPGSystem) Dial(ctx context.Context) (Client, error) {
	if len(s.daemons) == 0 {
		return nil, errors.New(s.Name() + ": not started")
	}
	return s.daemons[(s.next.Add(1)-1)%uint64(len(s.daemons))].Dial(ctx)
}

// Usage is the PostgreSQL server's.
func (s *liminaldPGSystem) Usage() (Usage, error) { return s.pg.Usage() }

// Stop stops the daemons, then PostgreSQL.
func (s *liminaldPGSystem) Stop() error {
	var errs []error
	for _, d := range s.daemons {
		errs = append(errs, d.Stop())
	}
	s.daemons = nil
	return errors.Join(append(errs, s.pg.Stop())...)
}

// Version is liminald's and PostgreSQL's.
func (s *liminaldPGSystem) Version() string {
	return (&liminaldSystem{bin: s.bin}).Version() + "; " + s.pg.Version()
}

// Settings describes the daemons and the server.
func (s *liminaldPGSystem) Settings() string {
	return fmt.Sprintf("%d × `liminald serve --db postgres://…` with its defaults (group commit, 8 connections each), each on its own unix socket, "+
		"clients spread over them in turn; one PostgreSQL server as the postgres peer's (%s); CPU and peak RSS are the PostgreSQL server's only",
		s.n, strings.Join(postgresSettings, ", "))
}
