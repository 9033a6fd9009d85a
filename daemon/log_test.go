package daemon

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func TestNewLogger(t *testing.T) {
	t.Run("JSONLevelChangesLive", func(t *testing.T) {
		var buf bytes.Buffer
		log, level := NewLogger(&buf, "info", "json")
		log.Debug("hidden")
		log.Info("shown", "uid", 1000)
		level.Set(slog.LevelDebug)
		log.Debug("now shown")

		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if len(lines) != 2 {
			t.Fatalf("logged %q, want 2 lines", buf.String())
		}
		var rec struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
			UID   int    `json:"uid"`
		}
		if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil || rec.Msg != "shown" || rec.Level != "INFO" || rec.UID != 1000 {
			t.Errorf("first line = %s (%v), want the info record with uid", lines[0], err)
		}
		if !strings.Contains(lines[1], `"msg":"now shown"`) {
			t.Errorf("second line = %s, want the debug record", lines[1])
		}
	})
	t.Run("Text", func(t *testing.T) {
		var buf bytes.Buffer
		log, _ := NewLogger(&buf, "warn", "text")
		log.Info("hidden")
		log.Warn("disk full", "db", "/x.db")
		if got := buf.String(); !strings.Contains(got, `level=WARN msg="disk full" db=/x.db`) || strings.Contains(got, "hidden") {
			t.Errorf("logged %q, want one text warning", got)
		}
	})
	t.Run("InvalidFallsBack", func(t *testing.T) {
		var buf bytes.Buffer
		log, level := NewLogger(&buf, "loud", "xml")
		if level.Level() != slog.LevelInfo {
			t.Errorf("level = %v, want info", level.Level())
		}
		log.Info("x")
		if !strings.HasPrefix(buf.String(), "time=") {
			t.Errorf("logged %q, want text", buf.String())
		}
	})
}

func TestParseLevel(t *testing.T) {
	tests := []struct {
		in   string
		want slog.Level
		ok   bool
	}{
		{"debug", slog.LevelDebug, true},
		{"info", slog.LevelInfo, true},
		{"warn", slog.LevelWarn, true},
		{"error", slog.LevelError, true},
		{"warning", 0, false},
		{"DEBUG", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseLevel(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
