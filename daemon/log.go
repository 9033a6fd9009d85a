package daemon

import (
	"fmt"
	"io"
	"log/slog"
)

// NewLogger returns the daemon's structured logger, writing to w (stderr) in
// format, "text" or "json", at level, "debug", "info", "warn" or "error", and
// the variable holding that level: setting it changes the level of the
// running logger (a reload of log_level). A level or format that Validate
// would refuse falls back to info or text; validate the config first.
func NewLogger(w io.Writer, level, format string) (*slog.Logger, *slog.LevelVar) {
	lv := new(slog.LevelVar)
	if l, err := ParseLevel(level); err == nil {
		lv.Set(l)
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(h), lv
}

// ParseLevel reads a log level: "debug", "info", "warn" or "error". It
// returns an error for anything else.
func ParseLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q is not a log level (debug, info, warn or error)", s)
}
