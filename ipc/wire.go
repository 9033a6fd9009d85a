package ipc

import (
	"bufio"
	"bytes"
	"io"
)

// Protocol limits of SPEC §3 that are not the domain's.
const (
	// ProtocolVersion is the protocol hello reports: 2, with leases,
	// fencing, attempts, fingerprints, messages and explain (SPEC §7).
	ProtocolVersion = 2
	// DefaultMaxLineBytes is the default limit on a request line.
	DefaultMaxLineBytes = 1 << 20
	// MaxInflight is the number of unanswered requests a connection may
	// have before the server stops reading it.
	MaxInflight = 64
	// ReadLimitMax and ReadLimitDefault bound the limit of a read.
	ReadLimitMax     = 10000
	ReadLimitDefault = 1000
	// ConversationsLimitMax and ConversationsLimitDefault bound the limit of
	// a conversations request.
	ConversationsLimitMax     = 1000
	ConversationsLimitDefault = 100
	// MessagesLimitMax and MessagesLimitDefault bound the limit of a
	// messages request.
	MessagesLimitMax     = 1000
	MessagesLimitDefault = 100
	// ExplainEventsMax is the most events explain answers.
	ExplainEventsMax = 1000
)

// lineReader reads lines of at most a given length from a bufio.Reader,
// without ever holding more than that length plus its line ending.
type lineReader struct {
	r     *bufio.Reader
	buf   []byte // a line that spans more than one fill of r's buffer
	limit int    // the limit of the last line read
}

func newLineReader(r io.Reader, size int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, size)}
}

// hasLine reports whether a whole line is buffered and waits for next.
func (lr *lineReader) hasLine() bool {
	b, _ := lr.r.Peek(lr.r.Buffered())
	return bytes.IndexByte(b, '\n') >= 0
}

// next returns the next line without its "\n" or "\r\n", or tooLong set
// when the line is over limit bytes: then the whole line has been read and
// discarded. limit is asked once the line's first bytes arrived, so that a
// new limit applies to every line that arrives after it was set. The line
// is valid until the next call. A last line that ends without "\n" is
// returned as a line; after it, err is io.EOF or the reader's error.
func (lr *lineReader) next(limit func() int) (line []byte, tooLong bool, err error) {
	if cap(lr.buf) > 64<<10 {
		lr.buf = nil // do not keep a long line's buffer
	}
	lr.buf = lr.buf[:0]
	max := -1
	for {
		chunk, err := lr.r.ReadSlice('\n')
		if max < 0 {
			max = limit()
			lr.limit = max
		}
		if !tooLong {
			switch {
			case len(lr.buf)+len(chunk) > max+2: // content, "\r", "\n"
				tooLong, lr.buf = true, lr.buf[:0]
			case err == nil && len(lr.buf) == 0:
				line = chunk // the whole line is in r's buffer
			default:
				lr.buf = append(lr.buf, chunk...)
				line = lr.buf
			}
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF && (tooLong || len(line) > 0):
			// A last line without "\n": answer it; EOF comes next time.
		case err != nil:
			return nil, false, err
		}
		if tooLong {
			return nil, true, nil
		}
		line = trimEOL(line)
		if len(line) > max {
			return nil, true, nil
		}
		return line, false, nil
	}
}

// trimEOL removes a trailing "\n", then a trailing "\r".
func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}

// blank reports whether line holds only JSON whitespace.
func blank(line []byte) bool {
	for _, c := range line {
		if !isSpace(c) {
			return false
		}
	}
	return true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// skipSpace returns the index of the first byte of b at or after i that is
// not JSON whitespace.
func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// skipString returns the index just after the JSON string that starts at
// b[i] (a '"'), and whether it holds an escape. b must be valid JSON.
func skipString(b []byte, i int) (end int, escaped bool) {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			escaped = true
			i++
		case '"':
			return i + 1, escaped
		}
	}
	return len(b), escaped
}

// skipValue returns the index just after the JSON value that starts at
// b[i]. b must be valid JSON.
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		end, _ := skipString(b, i)
		return end
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i, _ = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return i
		}
		i++
	}
	return i
}
