package ipc

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// TestLineReader_Next reads inputs with a buffer smaller than the lines, so
// that lines span fills, and checks each line, its limit and the end.
func TestLineReader_Next(t *testing.T) {
	const tooLong = "<too long>"
	long := strings.Repeat("x", 40)
	for _, tt := range []struct {
		name string
		in   string
		max  int
		want []string
	}{
		{"Empty", "", 10, nil},
		{"One", "abc\n", 10, []string{"abc"}},
		{"NoNewline", "abc", 10, []string{"abc"}},
		{"CRLF", "abc\r\ndef\r\n", 10, []string{"abc", "def"}},
		{"LoneCR", "a\rb\n", 10, []string{"a\rb"}},
		{"OnlyOneCRTrimmed", "a\r\r\n", 10, []string{"a\r"}},
		{"BlankLines", "\n\r\n\n", 10, []string{"", "", ""}},
		{"AtLimit", "0123456789\n", 10, []string{"0123456789"}},
		{"AtLimitCRLF", "0123456789\r\n", 10, []string{"0123456789"}},
		{"OverByOne", "0123456789a\nok\n", 10, []string{tooLong, "ok"}},
		{"OverByOneCRLF", "0123456789a\r\nok\n", 10, []string{tooLong, "ok"}},
		{"OverByCR", "0123456789\r\r\nok\n", 10, []string{tooLong, "ok"}},
		{"FarOver", long + "\nok\n" + long + "\n", 10, []string{tooLong, "ok", tooLong}},
		{"FarOverAtEOF", "ok\n" + long, 10, []string{"ok", tooLong}},
		{"Spanning", long + "\n" + long + "\r\n", 40, []string{long, long}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, r := range []struct {
				name string
				r    io.Reader
			}{
				{"Whole", strings.NewReader(tt.in)},
				{"ByteByByte", iotest.OneByteReader(strings.NewReader(tt.in))},
			} {
				lr := newLineReader(r.r, 16)
				var got []string
				for {
					line, over, err := lr.next(func() int { return tt.max })
					if err != nil {
						if !errors.Is(err, io.EOF) {
							t.Errorf("%s: next: %v", r.name, err)
						}
						break
					}
					if over {
						got = append(got, tooLong)
					} else {
						got = append(got, string(line))
					}
				}
				if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tt.want) {
					t.Errorf("%s: %q: got %q, want %q", r.name, tt.in, got, tt.want)
				}
			}
		})
	}
}

// TestLineReader_Error checks that a read error other than EOF in the
// middle of a line drops the part read instead of answering it.
func TestLineReader_Error(t *testing.T) {
	boom := errors.New("boom")
	lr := newLineReader(io.MultiReader(strings.NewReader("ok\npart"), iotest.ErrReader(boom)), 16)
	if line, _, err := lr.next(func() int { return 100 }); err != nil || string(line) != "ok" {
		t.Fatalf("next = %q, %v", line, err)
	}
	if line, _, err := lr.next(func() int { return 100 }); !errors.Is(err, boom) {
		t.Errorf("next = %q, %v; want the read error", line, err)
	}
}
