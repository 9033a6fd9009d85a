// Command liminald is the liminald daemon and its command line: serve runs
// the daemon; the client subcommands speak its protocol over the unix
// socket for local debugging; check, export, import and backup work on a
// database file.
//
// Each subcommand is a type in a file of its name (check.go holds
// checkCommand) with a Command method that describes it to urfave/cli and a
// Run method that does it. What several share lives in one place each:
// finding the configuration in config.go, talking to the daemon in
// client.go, opening the database in offline.go, printing replies in
// output.go, and the errors and exit codes in errors.go.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"liminald/ipc"
)

// version is set at build time with -ldflags "-X main.version=..."; else it
// comes from the module's build information.
var version = ""

func main() {
	os.Exit(run(context.Background(), os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// run runs the command line args and returns the exit code: 0 on success,
// 1 on a failure (its error code printed), 2 on a usage error.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	stdout, stderr = openTerminal(stdout, stderr)
	app := newApp(stdin, stdout, stderr)
	args, err := flagsFirst(app.Commands, args)
	if err == nil {
		err = app.RunContext(ctx, args)
	}
	if t, ok := stderr.(*terminal); ok {
		t.clear()
	}
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ie *ipc.Error
	if errors.As(err, &ie) {
		fmt.Fprintf(stderr, "liminald: %s\n", ie.Error())
		return 1
	}
	fmt.Fprintf(stderr, "liminald: %s: %v\n", commandCode(err), err)
	if isUsage(err) {
		return 2
	}
	return 1
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:            "liminald",
		Usage:           "durable memory of message processing: skip, resume or start a redelivered message",
		Version:         versionString(),
		Reader:          stdin,
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		Commands:        commands(),
		Action:          root,
		ExitErrHandler:  func(*cli.Context, error) {}, // run prints errors and picks the exit code
		OnUsageError:    onUsageError,
		Description: "liminald help COMMAND (or liminald COMMAND --help) shows a command's flags. Flags may " +
			"come before or after the arguments; an argument that starts with - goes after --.",
	}
}

// commands returns every subcommand, in the order help lists them. A
// command line that does not parse, or lacks a required flag, is a usage
// error for each of them.
func commands() []*cli.Command {
	cmds := []*cli.Command{
		serveCommand{}.Command(),

		receiveCommand{}.Command(),
		decideCommand{}.Command(),
		startCommand{}.Command(),
		stepCommand{}.Command(),
		renewCommand{}.Command(),
		finishCommand{}.Command(),
		failCommand{}.Command(),
		releaseCommand{}.Command(),
		stateCommand{}.Command(),
		messagesCommand{}.Command(),
		explainCommand{}.Command(),
		eventsCommand{}.Command(),
		conversationsCommand{}.Command(),
		statsCommand{}.Command(),
		pingCommand{}.Command(),
		socketCommand{}.Command(),
		uiCommand{}.Command(),

		checkCommand{}.Command(),
		exportCommand{}.Command(),
		importCommand{}.Command(),
		backupCommand{}.Command(),
	}
	for _, cmd := range cmds {
		cmd.OnUsageError = onUsageError
		cmd.Before = checkRequired
		// No help subcommand: liminald state help is the state of the
		// conversation help (help and --help go through root).
		cmd.HideHelpCommand = true
	}
	return cmds
}

// root runs when the command line names no command: liminald alone and
// liminald help list the commands, liminald help COMMAND shows a command's
// help, liminald version prints the version. Returns a usage error naming
// anything else.
func root(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) == 0 {
		return cli.ShowAppHelp(c)
	}
	switch name, rest := args[0], args[1:]; {
	case name == "help" && len(rest) == 0:
		return cli.ShowAppHelp(c)
	case name == "help" && len(rest) == 1:
		if c.App.Command(rest[0]) == nil {
			return usagef("no command %q; liminald help lists them", rest[0])
		}
		return cli.ShowCommandHelp(c, rest[0])
	case name == "help":
		return usagef("help takes at most one COMMAND, got %d arguments", len(rest))
	case name == "version" && len(rest) == 0:
		cli.ShowVersion(c)
		return nil
	case name == "version":
		return usagef("version takes no arguments")
	}
	return usagef("no command %q; liminald help lists them", args[0])
}

// flagsFirst returns the command line args with the flags of the command
// it names moved before that command's arguments, for urfave/cli stops
// reading flags at the first argument: liminald receive orders m-20 --json
// runs as liminald receive --json -- orders m-20. A flag's value stays with
// its flag; everything after -- stays an argument, so an argument that
// starts with - goes after --. A command line that asks a command for
// --help or -h, anywhere before --, shows its help (as liminald help
// COMMAND). Returns a usage error for a flag the command does not have.
func flagsFirst(cmds []*cli.Command, args []string) ([]string, error) {
	if len(args) < 2 {
		return args, nil
	}
	var cmd *cli.Command
	for _, c := range cmds {
		if c.HasName(args[1]) {
			cmd = c
			break
		}
	}
	if cmd == nil {
		return args, nil
	}
	var flags, positional []string
	rest := args[2:]
	for i := 0; i < len(rest); i++ {
		arg := rest[i]
		if arg == "--" {
			positional = append(positional, rest[i+1:]...)
			break
		}
		if len(arg) < 2 || arg[0] != '-' {
			positional = append(positional, arg)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimPrefix(arg[1:], "-"), "=")
		if name == "help" || name == "h" {
			return []string{args[0], "help", cmd.Name}, nil
		}
		f := flagNamed(cmd, name)
		if f == nil && cmd.ArgsUsage == "" {
			return nil, usagef("%s has no flag %s", cmd.Name, arg)
		}
		if f == nil {
			return nil, usagef("%s has no flag %s (an argument that starts with - goes after --: liminald %s [flags] -- %s)",
				cmd.Name, arg, cmd.Name, cmd.ArgsUsage)
		}
		flags = append(flags, arg)
		if df, ok := f.(cli.DocGenerationFlag); ok && df.TakesValue() && !hasValue && i+1 < len(rest) {
			i++
			flags = append(flags, rest[i])
		}
	}
	out := append([]string{args[0], args[1]}, flags...)
	return append(append(out, "--"), positional...), nil
}

// flagNamed returns the flag of cmd with the name or alias name, or nil.
func flagNamed(cmd *cli.Command, name string) cli.Flag {
	for _, f := range cmd.Flags {
		if slices.Contains(f.Names(), name) {
			return f
		}
	}
	return nil
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
