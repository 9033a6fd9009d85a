package conversation

import "fmt"

// Filter is a filter of a conversation's messages (SPEC §7, the messages
// op): every message, those of one stored status, or those leased or
// quarantined at a moment. Its value is what a store's query compares: 0
// for every message, 1 to 4 a stored status, FilterLeased, FilterQuarantined.
type Filter int64

// The filters beyond the stored statuses (1 to 4).
const (
	FilterAll         Filter = 0
	FilterLeased      Filter = 5
	FilterQuarantined Filter = 6
)

// ParseFilter parses a messages filter: "" for every message, a stored
// status ("received", "in_progress", "errored", "finished"), "leased" or
// "quarantined". Returns a *FieldError naming "status" for another.
func ParseFilter(s string) (Filter, error) {
	switch s {
	case "":
		return FilterAll, nil
	case "leased":
		return FilterLeased, nil
	case "quarantined":
		return FilterQuarantined, nil
	}
	st, ok := ParseStatus(s)
	if !ok || st == StatusUnknown {
		return 0, &FieldError{Field: "status", Problem: fmt.Sprintf("%q is not one of received, in_progress, leased, errored, finished, quarantined", s)}
	}
	return Filter(st), nil
}

// Keep reports whether m passes f at mo. A store's query narrows leased and
// quarantined by their columns; these rules have the last word on each row.
func (f Filter) Keep(m *Message, mo Moment) bool {
	switch f {
	case FilterAll:
		return true
	case FilterLeased:
		return m.Leased(mo.Now)
	case FilterQuarantined:
		return m.Quarantined(mo.Now, mo.MaxAttempts)
	}
	return m.Status == Status(f)
}
