package daemon

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestPeerCred(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.sock")
	ln := mustListen(t, path, 0o600, "")
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Errorf("accept: %v", err)
			c = nil
		}
		accepted <- c
	}()
	client, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-accepted
	if server == nil {
		t.FailNow()
	}
	defer server.Close()

	// Both ends are this process.
	for name, c := range map[string]net.Conn{"server": server, "client": client} {
		uid, gid, pid, err := PeerCred(c)
		if err != nil {
			t.Fatalf("PeerCred(%s end): %v", name, err)
		}
		if int(uid) != os.Geteuid() || int(gid) != os.Getegid() || int(pid) != os.Getpid() {
			t.Errorf("PeerCred(%s end) = uid %d, gid %d, pid %d; want %d, %d, %d",
				name, uid, gid, pid, os.Geteuid(), os.Getegid(), os.Getpid())
		}
	}

	t.Run("NotUnix", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		if _, _, _, err := PeerCred(a); err == nil {
			t.Error("PeerCred(net.Pipe) succeeded, want an error")
		}
	})
}

func TestAllowList_Allows(t *testing.T) {
	tests := []struct {
		name     string
		list     AllowList
		uid, gid uint32
		want     bool
	}{
		{name: "EmptyAllowsAnyone", list: AllowList{}, uid: 1234, gid: 1234, want: true},
		{name: "EmptySlicesAllowAnyone", list: AllowList{UIDs: []uint32{}, GIDs: []uint32{}}, uid: 1, gid: 1, want: true},
		{name: "ListedUID", list: AllowList{UIDs: []uint32{1000, 1001}}, uid: 1001, gid: 5, want: true},
		{name: "UnlistedUID", list: AllowList{UIDs: []uint32{1000}}, uid: 1002, gid: 1000, want: false},
		{name: "ListedGID", list: AllowList{GIDs: []uint32{50}}, uid: 1002, gid: 50, want: true},
		{name: "UnlistedGID", list: AllowList{GIDs: []uint32{50}}, uid: 50, gid: 51, want: false},
		{name: "EitherListSuffices", list: AllowList{UIDs: []uint32{1000}, GIDs: []uint32{50}}, uid: 7, gid: 50, want: true},
		{name: "NeitherList", list: AllowList{UIDs: []uint32{1000}, GIDs: []uint32{50}}, uid: 7, gid: 8, want: false},
		{name: "RootNotImplicit", list: AllowList{UIDs: []uint32{1000}}, uid: 0, gid: 0, want: false},
		{name: "RootListed", list: AllowList{UIDs: []uint32{0}}, uid: 0, gid: 0, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.list.Allows(tt.uid, tt.gid); got != tt.want {
				t.Errorf("%+v.Allows(%d, %d) = %v, want %v", tt.list, tt.uid, tt.gid, got, tt.want)
			}
		})
	}

	t.Run("FromConfig", func(t *testing.T) {
		c := DefaultConfig()
		c.AllowUIDs = []uint32{1000}
		a := c.AllowList()
		c.AllowUIDs[0] = 1 // the list is a copy: a reload cannot change it
		if !a.Allows(1000, 0) || a.Allows(1, 0) {
			t.Errorf("Config.AllowList() = %+v, want uid 1000 only", a)
		}
	})
}
