package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// TestStatus holds two locks and prints them as a table, wide, as JSON
// and YAML, and one of them alone; a free lock is said free on stderr.
func TestStatus(t *testing.T) {
	k := newCluster(t)
	if code, _, stderr := k.run(t, "status"); code != 0 || !strings.Contains(stderr, "No locks held in namespace "+k.ns) {
		t.Errorf("no locks: got exit code %d and stderr %q, want 0 and that none is held", code, stderr)
	}
	holders := map[string]string{}
	for _, name := range []string{"beta", "alpha"} {
		p := k.start(t, "", "run", name, "--identity", "id-"+name, "--", "sleep", "60")
		t.Cleanup(func() { _ = p.cmd.Process.Signal(syscall.SIGTERM); p.wait(t, 10*time.Second) })
		holders[name] = ptr.Deref(k.waitForHolder(t, name).Spec.HolderIdentity, "")
	}

	code, out, stderr := k.run(t, "status")
	if code != 0 {
		t.Fatalf("status: got exit code %d, stderr %q", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	wantHeader := regexp.MustCompile(`^NAME +HOLDER +HELD FOR +EXPIRES IN +HANDOFFS$`)
	if len(lines) != 3 || !wantHeader.MatchString(lines[0]) {
		t.Fatalf("got table\n%s\nwant a header and two rows", out)
	}
	for i, name := range []string{"alpha", "beta"} {
		row := regexp.MustCompile(`^` + name + ` +` + regexp.QuoteMeta(holders[name]) + ` +\d+s +\d+s +0$`)
		if !row.MatchString(lines[i+1]) {
			t.Errorf("got row %q, want %s, its holder, held for seconds, expiring in seconds, 0 handoffs", lines[i+1], name)
		}
	}

	code, out, _ = k.run(t, "status", "-o", "wide")
	if code != 0 || !regexp.MustCompile(`(?m)^NAME .* HANDOFFS +LEASE +TAKEOVERS +TOKEN$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^alpha .* 15s +0 +\d+$`).MatchString(out) {
		t.Errorf("-o wide: got exit code %d and\n%s\nwant the lease, takeovers and token too", code, out)
	}

	code, out, _ = k.run(t, "status", "-o", "json")
	var list struct {
		Kind  string                 `json:"kind"`
		Items []coordinationv1.Lease `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil {
		t.Fatalf("-o json: got exit code %d, %v, output\n%s", code, err, out)
	}
	if list.Kind != "List" || len(list.Items) != 2 {
		t.Fatalf("-o json: got kind %q with %d items, want a List of 2", list.Kind, len(list.Items))
	}
	for _, l := range list.Items {
		if l.Kind != "Lease" || ptr.Deref(l.Spec.HolderIdentity, "") != holders[l.Name] {
			t.Errorf("-o json: got %s %s held by %v, want the Lease of its holder %q", l.Kind, l.Name, ptr.Deref(l.Spec.HolderIdentity, ""), holders[l.Name])
		}
	}

	code, out, _ = k.run(t, "status", "beta", "-o", "yaml")
	var one coordinationv1.Lease
	if err := yaml.Unmarshal([]byte(out), &one); code != 0 || err != nil || one.Kind != "Lease" || one.Name != "beta" {
		t.Errorf("status beta -o yaml: got exit code %d, %v, output\n%s\nwant the Lease beta", code, err, out)
	}

	code, out, stderr = k.run(t, "status", "gamma", "-o", "json")
	if code != 0 || out != "" || !strings.Contains(stderr, "lock gamma is free") {
		t.Errorf("a free lock: got exit code %d, stdout %q, stderr %q; want 0, nothing, and that it is free", code, out, stderr)
	}
}
