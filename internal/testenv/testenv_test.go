package testenv

import "testing"

func TestInCI(t *testing.T) {
	for _, c := range []struct {
		value string
		want  bool
	}{{"", false}, {"false", false}, {"0", false}, {"true", true}, {"1", true}} {
		t.Setenv("CI", c.value)
		if got := InCI(); got != c.want {
			t.Errorf("InCI() with CI=%q = %v, want %v", c.value, got, c.want)
		}
	}
}
