package main

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// badInputRow is one row of a table of the "Bad input" section of
// docs/RELIABILITY.md.
type badInputRow struct {
	line    int    // in the file, for messages
	class   string // what the row shows
	request string // the bytes to send, expanded, without the "\n"
	reply   string // the exact reply line; "" for no reply
}

var (
	repeatNotation = regexp.MustCompile(`<(\d+) (.)>`)
	byteNotation   = regexp.MustCompile(`\\x[0-9a-fA-F]{2}`)
)

// expandRequest expands the notation of the request cells: "<N c>" is N
// copies of the character c, and "\xHH" is the byte HH.
func expandRequest(s string) string {
	s = repeatNotation.ReplaceAllStringFunc(s, func(m string) string {
		sub := repeatNotation.FindStringSubmatch(m)
		n, err := strconv.Atoi(sub[1])
		if err != nil {
			return m
		}
		return strings.Repeat(sub[2], n)
	})
	return byteNotation.ReplaceAllStringFunc(s, func(m string) string {
		b, _ := strconv.ParseUint(m[2:], 16, 8)
		return string([]byte{byte(b)})
	})
}

// codeSpan returns the content of a cell that is one inline code span.
func codeSpan(cell string) (string, bool) {
	if len(cell) < 2 || cell[0] != '`' || cell[len(cell)-1] != '`' || strings.Count(cell, "`") != 2 {
		return "", false
	}
	return cell[1 : len(cell)-1], true
}

// badInputTables parses the tables of the "## Bad input" section of
// docs/RELIABILITY.md.
func badInputTables(t *testing.T) [][]badInputRow {
	t.Helper()
	doc, err := os.ReadFile("../../docs/RELIABILITY.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(doc), "\n")
	var tables [][]badInputRow
	inSection, inTable, header := false, false, 0
	for i, line := range lines {
		if strings.HasPrefix(line, "## ") {
			inSection = line == "## Bad input"
			inTable = false
			continue
		}
		if !inSection {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		if !inTable {
			inTable, header = true, 0
			tables = append(tables, nil)
		}
		if header < 2 { // the header row and the separator row
			if header == 0 && line != "| class | request line | reply |" {
				t.Fatalf("RELIABILITY.md:%d: table header %q, want | class | request line | reply |", i+1, line)
			}
			header++
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) != 5 || cells[0] != "" || cells[4] != "" {
			t.Fatalf("RELIABILITY.md:%d: want 3 cells: %s", i+1, line)
		}
		row := badInputRow{line: i + 1, class: strings.TrimSpace(cells[1])}
		req, ok := codeSpan(strings.TrimSpace(cells[2]))
		if !ok {
			t.Fatalf("RELIABILITY.md:%d: the request cell is not one code span: %s", i+1, line)
		}
		row.request = expandRequest(req)
		if reply := strings.TrimSpace(cells[3]); reply != "no reply" {
			if row.reply, ok = codeSpan(reply); !ok || row.reply == "" {
				t.Fatalf("RELIABILITY.md:%d: the reply cell is neither a code span nor \"no reply\": %s", i+1, line)
			}
		}
		tables[len(tables)-1] = append(tables[len(tables)-1], row)
	}
	return tables
}

// TestBadInput_Catalogue replays the "Bad input" tables of
// docs/RELIABILITY.md, each on one connection to a fresh daemon, in order:
// the first with --max-line-bytes 1024, the second with the default line
// limit. Every reply must be the one in the table, byte for byte, and a row
// with "no reply" must get none (the next row's reply, or the closing ping's,
// comes next).
func TestBadInput_Catalogue(t *testing.T) {
	tables := badInputTables(t)
	if len(tables) != 2 {
		t.Fatalf("RELIABILITY.md's Bad input section has %d tables, want 2", len(tables))
	}
	if n := len(tables[0]) + len(tables[1]); n < 40 {
		t.Fatalf("RELIABILITY.md's Bad input tables have %d rows, want at least 40", n)
	}
	flags := [][]string{{"--max-line-bytes", "1024"}, nil}
	for i, rows := range tables {
		d := startDaemon(t, flags[i]...)
		c := dialRaw(t, d.socket)
		failures := 0
		for _, row := range rows {
			// A deadline per row, not per connection: a missing reply
			// fails in seconds, and a slow machine gets time for all.
			c.nc.SetDeadline(time.Now().Add(10 * time.Second))
			c.send(row.request + "\n")
			if row.reply == "" {
				continue
			}
			if got, _ := c.reply(); got != row.reply {
				t.Errorf("RELIABILITY.md:%d (%s):\n got %s\nwant %s", row.line, row.class, got, row.reply)
				if failures++; failures >= 10 {
					t.Fatal("too many failures; the replies are probably out of step")
				}
			}
		}
		const end = `{"id":"badinput-end","ok":true}`
		if got, _ := c.do(`{"id":"badinput-end","op":"ping"}`); got != end {
			t.Errorf("table %d: the closing ping got %s, want %s (a row left a reply unread, or got one it should not)", i+1, got, end)
		}
	}
}
