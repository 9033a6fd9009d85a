package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"liminald/pgtest"
)

// TestDeploy_KubernetesPostgres: the manifest of several replicas on one
// PostgreSQL database parses, takes the database URL from a Secret (not
// from its arguments), keeps no volume for a database, waits for the
// server longer than its startupProbe gives up, and its sidecar's
// arguments, with LIMINAL_DB a real server's URL, start a daemon.
func TestDeploy_KubernetesPostgres(t *testing.T) {
	b, err := os.ReadFile("../../deploy/kubernetes/liminald-postgres.yaml")
	if err != nil {
		t.Fatal(err)
	}
	type container struct {
		Args []string
		Env  []struct {
			Name      string
			ValueFrom *struct {
				SecretKeyRef *struct{ Name, Key string } `yaml:"secretKeyRef"`
			} `yaml:"valueFrom"`
		}
		StartupProbe *struct {
			PeriodSeconds    int `yaml:"periodSeconds"`
			FailureThreshold int `yaml:"failureThreshold"`
		} `yaml:"startupProbe"`
	}
	var secret, deployment struct {
		Kind       string
		Metadata   struct{ Name string }
		StringData map[string]string `yaml:"stringData"`
		Spec       struct {
			Replicas int
			Template struct {
				Spec struct {
					InitContainers []container `yaml:"initContainers"`
					Volumes        []struct {
						Name                  string
						PersistentVolumeClaim any `yaml:"persistentVolumeClaim"`
					}
				}
			}
		}
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&secret); err != nil || secret.Kind != "Secret" {
		t.Fatalf("the first document: %v, %+v; want the Secret", err, secret)
	}
	if err := dec.Decode(&deployment); err != nil || deployment.Kind != "Deployment" {
		t.Fatalf("the second document: %v, %+v; want the Deployment", err, deployment)
	}
	pod := deployment.Spec.Template.Spec
	if deployment.Spec.Replicas < 2 || len(pod.InitContainers) != 1 {
		t.Fatalf("deployment: %+v; want several replicas and the liminald sidecar", deployment)
	}
	for _, v := range pod.Volumes {
		if v.PersistentVolumeClaim != nil {
			t.Errorf("volume %s is a persistent volume claim: the database is PostgreSQL's", v.Name)
		}
	}
	sidecar := pod.InitContainers[0]
	var ref string
	for _, e := range sidecar.Env {
		if e.Name == "LIMINAL_DB" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			if k := e.ValueFrom.SecretKeyRef; k.Name == secret.Metadata.Name && secret.StringData[k.Key] != "" {
				ref = secret.StringData[k.Key]
			}
		}
	}
	if !strings.HasPrefix(ref, "postgres://") {
		t.Errorf("env %+v: want LIMINAL_DB from the Secret's postgres:// URL", sidecar.Env)
	}
	if slices.ContainsFunc(sidecar.Args, func(a string) bool { return strings.HasPrefix(a, "--db") }) {
		t.Errorf("args %v: the URL, with its password, belongs in the Secret, not the arguments", sidecar.Args)
	}
	wait := 0
	for _, arg := range sidecar.Args {
		if v, ok := strings.CutPrefix(arg, "--connect-timeout="); ok {
			if v == "2m" {
				wait = 120
			}
		}
	}
	if p := sidecar.StartupProbe; wait == 0 || p == nil || p.PeriodSeconds*p.FailureThreshold <= wait {
		t.Errorf("args %v, startupProbe %+v: want --connect-timeout=2m, and a probe that waits longer", sidecar.Args, p)
	}

	srv := pgtest.Start(t)
	dir := t.TempDir()
	d := newDaemonProc(t, dir, filepath.Join(dir, "s.sock"), "")
	d.cmd.Args = sidecarCommand(sidecar.Args, d)
	d.cmd.Env = append(d.cmd.Env, "LIMINAL_DB="+srv.URL("postgres"))
	d.start()
	if line, _ := dialRaw(t, d.socket).do(`{"op":"receive","conversation":"c","message_id":"m"}`); !strings.Contains(line, `"decision":"start"`) {
		t.Errorf("receive through the sidecar's daemon: %s", line)
	}
}
