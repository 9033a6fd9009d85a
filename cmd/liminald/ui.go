package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"liminald/ipc"
	"liminald/ui"
)

// uiCommand serves the read-only web view: liminald ui [--listen ADDR]
// [--open].
type uiCommand struct{}

// Command describes ui.
func (cmd uiCommand) Command() *cli.Command {
	return &cli.Command{
		Name:  "ui",
		Usage: "serve a read-only web view of the daemon's conversations on a loopback address",
		Description: "It prints a URL with a random token: open it in a browser (the first visit sets a cookie). " +
			"Only this machine can reach it, and only with the token. It runs until SIGINT or SIGTERM.",
		Flags: []cli.Flag{
			socketFlag, configFlag,
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:0", Usage: "serve on this loopback `ADDR` (host:port; port 0 picks a free one)"},
			&cli.BoolFlag{Name: "open", Usage: "open the URL in the desktop's browser"},
		},
		Action: cmd.Run,
	}
}

// Run serves the web view until the command's context ends.
func (uiCommand) Run(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("ui takes no arguments")
	}
	addr := c.String("listen")
	if !ui.Loopback(addr) {
		return usagef("--listen %s: the web view serves only on a loopback address (127.0.0.1, [::1] or localhost), with a port", addr)
	}
	cfg, err := resolve(c)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(c.App.ErrWriter, nil))
	srv, err := ui.New(func(ctx context.Context) (*ipc.Client, error) { return ipc.Dial(ctx, cfg.Socket, ui.DialOptions...) }, log)
	if err != nil {
		return err
	}
	defer srv.Close()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	url := srv.URL(l.Addr())
	fmt.Fprintf(c.App.Writer, "liminald ui: %s\n", url)
	if c.Bool("open") {
		openBrowser(url)
	}
	// Event streams last as long as their page: shutting down ends them
	// through the requests' base context, so that Shutdown need not wait.
	base, endStreams := context.WithCancel(context.Background())
	defer endStreams()
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return base }}
	hs.RegisterOnShutdown(endStreams)
	done := make(chan error, 1)
	go func() { done <- hs.Serve(l) }()
	stopped, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	select {
	case err := <-done:
		return err
	case <-stopped.Done():
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := hs.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// openBrowser asks the desktop to open url; it is best effort.
func openBrowser(url string) {
	name := "xdg-open"
	if runtime.GOOS == "darwin" {
		name = "open"
	}
	if err := exec.Command(name, url).Start(); err != nil {
		slog.Warn("cannot open a browser", "err", err)
	}
}
