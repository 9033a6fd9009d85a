package offline

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"liminald/conversation"
)

// ImportError is a line that an import refused.
type ImportError struct {
	Line int // 1-based line of the input
	Err  error
}

func (e *ImportError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *ImportError) Unwrap() error { return e.Err }

// Kind is what a line of an export is.
type Kind uint8

const (
	// KindEvent is an event, appended by the write rules as when it was
	// logged (Item.Command, at Item.Event.TS).
	KindEvent Kind = iota + 1
	// KindHeader is a conversation's header: the store gives it the
	// messages it compacted and its horizon (Item.Header), and its next
	// seq, never lowering it.
	KindHeader
	// KindTombstone is a tombstone (Item.Tombstone) of a compacted message
	// the store restores.
	KindTombstone
)

// Item is one thing an import hands a store: a line read, or, once every
// line is read, a header that gives a conversation its next seq (of Kind
// KindHeader with only Header.Next). The store answers it in Out and Err,
// as its writer answers a request.
type Item struct {
	Kind         Kind
	Line         int // of the input
	Conversation string
	Command      conversation.Command // KindEvent: the command that appends Event
	Event        conversation.Event   // KindEvent
	Header       Header               // KindHeader
	Tombstone    conversation.Tombstone

	Out conversation.Outcome
	Err error
}

// WriteAll has each of items written by the request that request makes of
// it (whose answer, then, sets the item's Out and Err), hands the requests
// to enqueue, which answers every one, and waits for their answers.
func WriteAll[R any](ctx context.Context, items []*Item, request func(it *Item, then func(conversation.Outcome, error)) R,
	enqueue func(ctx context.Context, reqs []R)) {
	var wg sync.WaitGroup
	wg.Add(len(items))
	reqs := make([]R, len(items))
	for i, it := range items {
		reqs[i] = request(it, func(out conversation.Outcome, err error) {
			it.Out, it.Err = out, err
			wg.Done()
		})
	}
	enqueue(ctx, reqs)
	wg.Wait()
}

// importBatch is how many items an import hands the store at once.
const importBatch = 1024

// Import reads the lines of an export from r and hands them to write in
// order, a batch at a time; write answers each item of a batch (Out, Err)
// before it returns. Each event must be the next of its conversation and
// one the write rules would append; in a conversation whose header says
// it compacted messages, it may skip their seqs. An event identical to the
// one already stored at its seq is skipped, and so is a tombstone identical
// to the one stored, so an interrupted import can be run again. A header
// gives its conversation the messages it compacted and its horizon at
// once, and its next seq once the whole input is read, so that the seqs of
// compacted messages at the end of the conversation are never reused. A
// tombstone needs its conversation's header before it. Returns the number
// of events appended, and an *ImportError naming the first line refused;
// the lines before it stay.
func Import(ctx context.Context, r io.Reader, progress Progress, write func(ctx context.Context, items []*Item)) (int64, error) {
	im := &importer{dec: json.NewDecoder(bufio.NewReaderSize(r, 1<<16)), next: make(map[string]*importedNext), write: write}
	for {
		it, err := im.read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// What came before the line refused stays, as when the
			// store refuses it.
			if serr := im.send(ctx); serr != nil {
				return im.appended, serr
			}
			return im.appended, &ImportError{Line: im.line, Err: err}
		}
		if err := im.add(ctx, it); err != nil {
			return im.appended, err
		}
		if len(im.items) == 0 && progress != nil {
			progress(int64(im.line), 0)
		}
	}
	if err := im.send(ctx); err != nil {
		return im.appended, err
	}
	// The next seqs last: the events before them may skip seqs, but not
	// go back.
	for _, name := range im.order {
		n := im.next[name]
		if err := im.add(ctx, &Item{Kind: KindHeader, Line: n.line, Conversation: name, Header: Header{Next: n.seq}}); err != nil {
			return im.appended, err
		}
	}
	if err := im.send(ctx); err != nil {
		return im.appended, err
	}
	if progress != nil {
		progress(int64(im.line), 0)
	}
	return im.appended, nil
}

// importer is the state of one Import.
type importer struct {
	dec  *json.Decoder
	line int // of the latest line read
	// next holds, by conversation, the next seq its header gave and the
	// line of that header; order, the conversations in the order of their
	// headers.
	next     map[string]*importedNext
	order    []string
	appended int64
	items    []*Item // the batch being built
	write    func(ctx context.Context, items []*Item)
}

type importedNext struct {
	seq  int64
	line int
}

// add adds it to the batch, and sends the batch once full.
func (im *importer) add(ctx context.Context, it *Item) error {
	im.items = append(im.items, it)
	if len(im.items) < importBatch {
		return nil
	}
	return im.send(ctx)
}

// send hands the batch to the store. Returns an *ImportError for the first
// item refused.
func (im *importer) send(ctx context.Context) error {
	items := im.items
	im.items = nil
	if len(items) == 0 {
		return nil
	}
	im.write(ctx, items)
	for _, it := range items {
		if it.Err == nil && it.Kind == KindEvent && it.Out.Seq != it.Command.ExpectedSeq {
			it.Err = fmt.Errorf("the write rules do not append this event (duplicate of seq %d)", it.Out.Seq)
		}
		if it.Err != nil {
			return &ImportError{Line: it.Line, Err: it.Err}
		}
		if it.Kind == KindEvent && it.Out.Append {
			im.appended++
		}
	}
	return nil
}

// lineKind is what Import reads a line as before it knows its kind: an
// event has a type, a header a next_seq, a tombstone line a tombstone.
type lineKind struct {
	Type      json.RawMessage `json:"type"`
	NextSeq   json.RawMessage `json:"next_seq"`
	Tombstone json.RawMessage `json:"tombstone"`
}

// read reads the next line. Returns io.EOF at the end of the input.
func (im *importer) read() (*Item, error) {
	var raw json.RawMessage
	err := im.dec.Decode(&raw)
	if errors.Is(err, io.EOF) {
		return nil, err
	}
	im.line++
	var kind lineKind
	if err == nil {
		err = json.Unmarshal(raw, &kind)
	}
	if err != nil {
		return nil, fmt.Errorf("not an event, header or tombstone line: %w", err)
	}
	switch {
	case kind.Tombstone != nil && (kind.Type != nil || kind.NextSeq != nil), kind.Type != nil && kind.NextSeq != nil:
		return nil, errors.New("a line is an event (type), a conversation header (next_seq) or a tombstone (tombstone), not several")
	case kind.NextSeq != nil:
		return im.header(raw)
	case kind.Tombstone != nil:
		return im.tombstone(raw)
	}
	it := &Item{Kind: KindEvent, Line: im.line}
	if err := it.Event.UnmarshalJSON(raw); err != nil {
		var fe *conversation.FieldError
		if errors.As(err, &fe) {
			return nil, err
		}
		return nil, fmt.Errorf("not an event object: %w", err)
	}
	it.Conversation, it.Command = it.Event.Conversation, conversation.CommandOf(&it.Event)
	return it, nil
}

// header reads the header line raw: its conversation compacted messages
// or has a horizon. It gives them at once, and its next seq is kept for
// the end of the input.
func (im *importer) header(raw json.RawMessage) (*Item, error) {
	var h struct {
		Conversation    *string `json:"conversation"`
		NextSeq         *int64  `json:"next_seq"`
		Compacted       *int64  `json:"compacted"`
		ForgottenBefore *int64  `json:"forgotten_before"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, fmt.Errorf("not a conversation header: %w", err)
	}
	if err := required(field{"conversation", h.Conversation != nil}, field{"next_seq", h.NextSeq != nil},
		field{"compacted", h.Compacted != nil}); err != nil {
		return nil, err
	}
	header := Header{Compacted: *h.Compacted}
	if h.ForgottenBefore != nil {
		header.Horizon = conversation.Horizon{Before: *h.ForgottenBefore, Set: true}
	}
	if err := errors.Join(conversation.ValidName("conversation", *h.Conversation), notNegative("next_seq", *h.NextSeq),
		notNegative("compacted", header.Compacted), notNegative("forgotten_before", header.Horizon.Before)); err != nil {
		return nil, err
	}
	name := *h.Conversation
	if n := im.next[name]; n != nil {
		n.seq, n.line = max(n.seq, *h.NextSeq), im.line
	} else {
		im.next[name] = &importedNext{seq: *h.NextSeq, line: im.line}
		im.order = append(im.order, name)
	}
	return &Item{Kind: KindHeader, Line: im.line, Conversation: name, Header: header}, nil
}

// tombstone reads the tombstone line raw, of a conversation whose header
// came before it.
func (im *importer) tombstone(raw json.RawMessage) (*Item, error) {
	var l struct {
		Conversation *string `json:"conversation"`
		Tombstone    struct {
			MessageID   *string `json:"message_id"`
			FinishedAt  *int64  `json:"finished_at"`
			Seq         *int64  `json:"seq"`
			Attempts    *int64  `json:"attempts"`
			Fingerprint string  `json:"fingerprint"`
		} `json:"tombstone"`
	}
	if err := json.Unmarshal(raw, &l); err != nil {
		return nil, fmt.Errorf("not a tombstone: %w", err)
	}
	t := &l.Tombstone
	if err := required(field{"conversation", l.Conversation != nil}, field{"tombstone.message_id", t.MessageID != nil},
		field{"tombstone.finished_at", t.FinishedAt != nil}, field{"tombstone.seq", t.Seq != nil},
		field{"tombstone.attempts", t.Attempts != nil}); err != nil {
		return nil, err
	}
	tomb := conversation.Tombstone{MessageID: *t.MessageID, FinishedAt: *t.FinishedAt, Seq: *t.Seq, Attempts: *t.Attempts,
		Fingerprint: t.Fingerprint}
	var fp error
	if tomb.Fingerprint != "" {
		fp = conversation.ValidFingerprint(tomb.Fingerprint)
	}
	if err := errors.Join(conversation.ValidName("conversation", *l.Conversation), conversation.ValidName("tombstone.message_id", tomb.MessageID),
		notNegative("tombstone.finished_at", tomb.FinishedAt), notNegative("tombstone.seq", tomb.Seq),
		notNegative("tombstone.attempts", tomb.Attempts), fp); err != nil {
		return nil, err
	}
	if im.next[*l.Conversation] == nil {
		return nil, fmt.Errorf("a tombstone of conversation %q, which no header before it says compacted messages", *l.Conversation)
	}
	return &Item{Kind: KindTombstone, Line: im.line, Conversation: *l.Conversation, Tombstone: tomb}, nil
}

// field is a field of a line, and whether the line has it.
type field struct {
	name    string
	present bool
}

// required refuses the first of fields that the line does not have.
func required(fields ...field) error {
	for _, f := range fields {
		if !f.present {
			return &conversation.FieldError{Field: f.name, Problem: "is required"}
		}
	}
	return nil
}

// notNegative refuses a negative v of field.
func notNegative(field string, v int64) error {
	if v < 0 {
		return &conversation.FieldError{Field: field, Problem: "must not be negative"}
	}
	return nil
}
