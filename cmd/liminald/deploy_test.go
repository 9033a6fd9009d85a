package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"liminald/internal/testenv"
)

// TestDeploy_SystemdUnits: systemd-analyze verify finds nothing to say about
// deploy/systemd (with ExecStart pointing at the binary under test).
func TestDeploy_SystemdUnits(t *testing.T) {
	testenv.NeedTools(t, "systemd-analyze")
	dir := t.TempDir()
	for _, name := range []string{"liminald.service", "liminald.socket"} {
		b, err := os.ReadFile(filepath.Join("../../deploy/systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		unit := strings.ReplaceAll(string(b), "/usr/local/bin/liminald", binary)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("systemd-analyze", "verify", filepath.Join(dir, "liminald.socket"), filepath.Join(dir, "liminald.service")).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestDeploy_KubernetesSidecar: the manifest parses, runs liminald as a
// native sidecar whose startupProbe is liminald ping, and shares the socket
// directory with the app.
func TestDeploy_KubernetesSidecar(t *testing.T) {
	b, err := os.ReadFile("../../deploy/kubernetes/liminald-sidecar.yaml")
	if err != nil {
		t.Fatal(err)
	}
	type container struct {
		Name          string
		Args          []string
		RestartPolicy string `yaml:"restartPolicy"`
		StartupProbe  *struct {
			Exec struct{ Command []string }
		} `yaml:"startupProbe"`
		VolumeMounts []struct {
			Name      string
			MountPath string `yaml:"mountPath"`
		} `yaml:"volumeMounts"`
	}
	var deployment struct {
		Kind string
		Spec struct {
			Template struct {
				Spec struct {
					SecurityContext struct {
						FSGroup int `yaml:"fsGroup"`
					} `yaml:"securityContext"`
					InitContainers []container `yaml:"initContainers"`
					Containers     []container
				}
			}
		}
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	for dec.Decode(&deployment) == nil && deployment.Kind != "Deployment" {
	}
	pod := deployment.Spec.Template.Spec
	if deployment.Kind != "Deployment" || len(pod.InitContainers) != 1 || len(pod.Containers) != 1 {
		t.Fatalf("manifest: %+v", deployment)
	}
	sidecar, app := pod.InitContainers[0], pod.Containers[0]
	if sidecar.RestartPolicy != "Always" {
		t.Errorf("liminald init container restartPolicy %q, want Always (a native sidecar)", sidecar.RestartPolicy)
	}
	if sidecar.StartupProbe == nil || !strings.Contains(strings.Join(sidecar.StartupProbe.Exec.Command, " "), "liminald ping") {
		t.Errorf("startupProbe %+v, want liminald ping", sidecar.StartupProbe)
	}
	if pod.SecurityContext.FSGroup == 0 || !strings.Contains(strings.Join(sidecar.Args, " "), "--socket-group") {
		t.Errorf("fsGroup %d, args %v: want fsGroup and --socket-group", pod.SecurityContext.FSGroup, sidecar.Args)
	}
	socketMount := func(c container) string {
		for _, m := range c.VolumeMounts {
			if m.Name == "socket" {
				return m.MountPath
			}
		}
		return ""
	}
	if socketMount(sidecar) == "" || socketMount(sidecar) != socketMount(app) {
		t.Errorf("socket volume mounted at %q in liminald and %q in the app", socketMount(sidecar), socketMount(app))
	}
	// The probe's command line is one liminald accepts.
	probe := sidecar.StartupProbe.Exec.Command
	if out, err := exec.Command(binary, append(probe[1:], "--help")...).CombinedOutput(); err != nil {
		t.Errorf("liminald %v --help: %v\n%s", probe[1:], err, out)
	}
}
