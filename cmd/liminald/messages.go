package main

import (
	"strconv"

	"github.com/urfave/cli/v2"

	"liminald/ipc"
)

// messagesCommand lists a conversation's messages by id, a page at a time:
// liminald messages [--status S] [--after ID] [--limit N] CONV.
type messagesCommand struct{}

// Command describes messages.
func (cmd messagesCommand) Command() *cli.Command {
	return &cli.Command{
		Name:      "messages",
		Usage:     "list a conversation's messages: status, attempts, last step, lease, quarantine",
		ArgsUsage: "CONV",
		Flags: clientFlags(
			&cli.StringFlag{Name: "status", DefaultText: "any", Usage: "only `S`: received, in_progress, leased, errored, finished or quarantined"},
			&cli.StringFlag{Name: "after", DefaultText: "from the first", Usage: "start after the message `ID`"},
			&cli.IntFlag{Name: "limit", DefaultText: strconv.Itoa(ipc.MessagesLimitDefault),
				Usage: "list at most `N` (up to " + strconv.Itoa(ipc.MessagesLimitMax) + ")"},
		),
		Description: "leased and quarantined filter the stored statuses: a leased message is in_progress, a quarantined one received or errored.",
		Action:      cmd.Run,
	}
}

// Run sends messages and prints the page.
func (messagesCommand) Run(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef("messages takes CONV, got %d arguments", c.NArg())
	}
	r := request{"op": "messages", "conversation": c.Args().First()}
	for _, name := range []string{"status", "after"} {
		if c.IsSet(name) {
			r[name] = c.String(name)
		}
	}
	if c.IsSet("limit") {
		r["limit"] = c.Int("limit")
	}
	return call(c, r, printMessages)
}
