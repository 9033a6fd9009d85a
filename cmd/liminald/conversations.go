package main

import (
	"encoding/json"
	"fmt"

	"github.com/urfave/cli/v2"
)

// conversationsCommand lists the conversations by name, page by page:
// liminald conversations.
type conversationsCommand struct{}

// Command describes conversations.
func (cmd conversationsCommand) Command() *cli.Command {
	return &cli.Command{
		Name:  "conversations",
		Usage: "list the conversations, by name",
		Flags: clientFlags(
			&cli.StringFlag{Name: "after", Usage: "start after the conversation `NAME`", DefaultText: "from the first"},
			&cli.IntFlag{Name: "limit", Usage: "list at most `N`", DefaultText: "all"},
		),
		Action: cmd.Run,
	}
}

// Run prints the conversations after --after, up to --limit, as a table or
// (--json) one object per line.
func (conversationsCommand) Run(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("conversations takes no arguments")
	}
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
