package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
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

// TestDeploy_SystemdExecStart: the service's command line reads
// /etc/liminald/liminald.toml, and starts a daemon with docs/liminald.toml
// there, as the unit's comment says to install it.
func TestDeploy_SystemdExecStart(t *testing.T) {
	b, err := os.ReadFile("../../deploy/systemd/liminald.service")
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
			args = strings.Fields(v)
		}
	}
	const config = "/etc/liminald/liminald.toml"
	if i := slices.Index(args, "--config"); i < 0 || i+1 == len(args) || args[i+1] != config {
		t.Fatalf("ExecStart %v: want --config %s", args, config)
	}
	installed, err := filepath.Abs("../../docs/liminald.toml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	d := newDaemonProc(t, dir, filepath.Join(dir, "s.sock"), filepath.Join(dir, "db"))
	d.cmd.Args = []string{binary}
	for _, arg := range args[1:] {
		switch arg {
		case config:
			arg = installed
		case "/var/lib/liminald/liminald.db":
			arg = d.db
		}
		d.cmd.Args = append(d.cmd.Args, arg)
	}
	// liminald.socket passes the socket; here serve makes it.
	d.cmd.Args = append(d.cmd.Args, "--socket", d.socket)
	d.start()
	if line, _ := dialRaw(t, d.socket).do(`{"op":"ping"}`); !strings.Contains(line, `"ok":true`) {
		t.Errorf("ping the service's daemon: %s", line)
	}
}

// TestDeploy_KubernetesSidecar: the manifest parses, runs liminald as a
// native sidecar whose startupProbe is liminald ping, shares the socket
// directory with the app, serves metrics on the pod's addresses where its
// prometheus.io annotations say, and its arguments start a daemon.
func TestDeploy_KubernetesSidecar(t *testing.T) {
	b, err := os.ReadFile("../../deploy/kubernetes/liminald-sidecar.yaml")
	if err != nil {
		t.Fatal(err)
	}
	type container struct {
		Name          string
		Args          []string
		RestartPolicy string `yaml:"restartPolicy"`
		Ports         []struct {
			Name          string
			ContainerPort int `yaml:"containerPort"`
		}
		StartupProbe *struct {
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
				Metadata struct {
					Annotations map[string]string
				}
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

	// Prometheus scrapes the pod's IP at the port and path of the
	// annotations: the endpoint listens there, on every interface.
	annotations := deployment.Spec.Template.Metadata.Annotations
	metrics := ""
	for _, arg := range sidecar.Args {
		if v, ok := strings.CutPrefix(arg, "--metrics="); ok {
			metrics = v
		}
	}
	host, port, err := net.SplitHostPort(metrics)
	if err != nil || host != "" || !slices.Contains(sidecar.Args, "--metrics-public") {
		t.Errorf("args %v: want --metrics=:PORT (every interface) and --metrics-public", sidecar.Args)
	}
	if annotations["prometheus.io/scrape"] != "true" || annotations["prometheus.io/port"] != port || annotations["prometheus.io/path"] != "/metrics" {
		t.Errorf("pod annotations %v: want prometheus.io/scrape \"true\", port %q and path /metrics", annotations, port)
	}
	if len(sidecar.Ports) != 1 || strconv.Itoa(sidecar.Ports[0].ContainerPort) != port {
		t.Errorf("liminald ports %+v, want the metrics port %s", sidecar.Ports, port)
	}

	// The sidecar's arguments start a daemon, with this machine's paths,
	// group and a free port.
	dir := t.TempDir()
	d := newDaemonProc(t, dir, filepath.Join(dir, "s.sock"), filepath.Join(dir, "db"))
	d.cmd.Args = sidecarCommand(sidecar.Args, d)
	d.start()
	if line, _ := dialRaw(t, d.socket).do(`{"op":"ping"}`); !strings.Contains(line, `"ok":true`) {
		t.Errorf("ping the sidecar's daemon: %s", line)
	}
}

// sidecarCommand is the command line of a manifest's sidecar arguments,
// args, for daemon d: with its socket and database, this machine's group
// and a free port.
func sidecarCommand(args []string, d *daemonProc) []string {
	cmd := []string{binary}
	for _, arg := range args {
		name, _, _ := strings.Cut(arg, "=")
		switch name {
		case "--socket":
			arg = name + "=" + d.socket
		case "--db":
			arg = name + "=" + d.db
		case "--socket-group":
			arg = name + "=" + strconv.Itoa(os.Getgid())
		case "--metrics":
			arg = name + "=:0"
		}
		cmd = append(cmd, arg)
	}
	return cmd
}
