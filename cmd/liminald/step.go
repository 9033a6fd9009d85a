package main

import (
	"encoding/base64"
	"io"
	"math"
	"os"
	"strconv"

	"github.com/urfave/cli/v2"
)

// stepCommand records a completed step of a message and its output:
// liminald step CONV MSG INDEX.
type stepCommand struct{}

// Command describes step.
func (cmd stepCommand) Command() *cli.Command {
	return &cli.Command{
		Name:      "step",
		Usage:     "record a completed step of a message and its output",
		ArgsUsage: "CONV MSG INDEX",
		Flags: clientFlags(expectedSeqFlag, tokenFlag,
			&cli.StringFlag{Name: "output", Usage: "the step's output as `TEXT`"},
			&cli.StringFlag{Name: "output-file", Usage: "read the step's output from `FILE` (- for stdin)"},
			&cli.StringFlag{Name: "output-base64", Usage: "the step's output as standard `BASE64`"},
			&cli.BoolFlag{Name: "empty", Usage: "the step's output is empty"},
		),
		Description: "Give the step's output with one of --output, --output-file and --output-base64, " +
			"or --empty for none: a step is recorded once, and another output for it later is a step_conflict.",
		Action: cmd.Run,
	}
}

// Run sends step and prints the seq of its event.
func (stepCommand) Run(c *cli.Context) error {
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
	return call(c, withToken(c, withExpectedSeq(c, r)), printAck)
}

// stepOutput returns the output given by --output, --output-file,
// --output-base64 or --empty. Returns a usage error unless exactly one is
// given (a step recorded with a forgotten output could never be recorded
// with the real one), or when the base64 is malformed, and the error of
// reading the file.
func stepOutput(c *cli.Context) ([]byte, error) {
	given := 0
	for _, f := range []string{"output", "output-file", "output-base64"} {
		if c.IsSet(f) {
			given++
		}
	}
	if c.Bool("empty") {
		given++
	}
	switch {
	case given == 0:
		return nil, usagef("step needs its output: give --output TEXT, --output-file FILE or --output-base64 B64, or --empty for none")
	case given > 1:
		return nil, usagef("give only one of --output, --output-file, --output-base64 and --empty")
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
