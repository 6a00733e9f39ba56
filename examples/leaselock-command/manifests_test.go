package leaselockcommand_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leaselock/leaselock/internal/testenv"
	"github.com/leaselock/leaselock/resourcelock"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(testenv.Main(m), testenv.IgnoredGoroutines()...)
}

// decoder decodes a document into client-go's typed objects, strictly: a
// kind that client-go does not know, an unknown field and a field given
// twice are errors, not silently dropped.
var decoder = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

// decodeAll returns the objects of the YAML documents in data, in order. A
// document of comments only is skipped.
func decodeAll(data []byte) ([]client.Object, error) {
	r := yaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []client.Object
	for n := 1; ; n++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		if js, err := yaml.ToJSON(doc); err == nil && bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			continue
		}
		obj, _, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", n, err)
		}
		o, ok := obj.(client.Object)
		if !ok {
			return nil, fmt.Errorf("document %d: %T is not an object of the API", n, obj)
		}
		objs = append(objs, o)
	}
}

// manifest is an object of one of the folder's YAML files.
type manifest struct {
	file string
	obj  client.Object
}

func (m manifest) String() string {
	return fmt.Sprintf("%s: %s %s", m.file, m.obj.GetObjectKind().GroupVersionKind().Kind, m.obj.GetName())
}

// manifests returns every object of every YAML file in the folder, and
// fails t unless each decodes strictly.
func manifests(t *testing.T) []manifest {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no YAML file in the folder")
	}
	var ms []manifest
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := decodeAll(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, o := range objs {
			ms = append(ms, manifest{file: f, obj: o})
		}
	}
	return ms
}

// only returns the one object of type T in ms, and fails t unless there is
// exactly one.
func only[T client.Object](t *testing.T, ms []manifest) T {
	t.Helper()
	var found []T
	for _, m := range ms {
		if o, ok := m.obj.(T); ok {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("%T in the manifests: got %d, want 1", zero, len(found))
	}
	return found[0]
}

// TestDecodeIsStrict shows that decodeAll, which every other test reads
// the manifests with, refuses what the API server would drop or refuse: a
// kind it does not know, a misspelled field, a field given twice.
func TestDecodeIsStrict(t *testing.T) {
	tests := []struct {
		name string
		doc  string
	}{
		{"unknown kind", "apiVersion: v1\nkind: ServiceAcount\nmetadata:\n  name: a\n"},
		{"unknown version", "apiVersion: batch/v9\nkind: CronJob\nmetadata:\n  name: a\n"},
		{"misspelled field", "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: a\nrule: []\n"},
		{"misspelled nested field", "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: a\nspec:\n  template:\n    spec:\n      serviceAcountName: a\n"},
		{"field given twice", "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n  name: b\n"},
		{"bad second document", "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ServiceAccount\nmetadat:\n  name: b\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if objs, err := decodeAll([]byte(tt.doc)); err == nil {
				t.Errorf("got %d objects and no error, want an error", len(objs))
			}
		})
	}
	objs, err := decodeAll([]byte("# comments only\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n---\n"))
	if err != nil || len(objs) != 1 {
		t.Errorf("a good document between empty ones: got %d objects, %v, want 1, nil", len(objs), err)
	}
	// The error names the field.
	_, err = decodeAll([]byte("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  nam: a\n"))
	if want := `unknown field "metadata.nam"`; !strings.Contains(fmt.Sprint(err), want) {
		t.Errorf("misspelled field: got %v, want an error with %s", err, want)
	}
}

// podSpec returns the Pod template of obj, and false for an object
// without one.
func podSpec(obj client.Object) (*corev1.PodSpec, bool) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return &o.Spec, true
	case *appsv1.Deployment:
		return &o.Spec.Template.Spec, true
	case *appsv1.StatefulSet:
		return &o.Spec.Template.Spec, true
	case *appsv1.DaemonSet:
		return &o.Spec.Template.Spec, true
	case *batchv1.Job:
		return &o.Spec.Template.Spec, true
	case *batchv1.CronJob:
		return &o.Spec.JobTemplate.Spec.Template.Spec, true
	}
	return nil, false
}

// lockContainer is a container that runs leaselock, with its command line.
type lockContainer struct {
	container *corev1.Container
	// init reports whether it is an init container.
	init bool
	argv []string
}

// lockContainers returns the containers of spec, init containers first,
// whose command runs a binary named leaselock.
func lockContainers(spec *corev1.PodSpec) []lockContainer {
	var found []lockContainer
	add := func(cs []corev1.Container, init bool) {
		for i := range cs {
			argv := slices.Concat(cs[i].Command, cs[i].Args)
			if len(argv) > 0 && path.Base(argv[0]) == "leaselock" {
				found = append(found, lockContainer{container: &cs[i], init: init, argv: argv})
			}
		}
	}
	add(spec.InitContainers, true)
	add(spec.Containers, false)
	return found
}

// runInvocation is a command line of `leaselock run`.
type runInvocation struct {
	lock string
	// flags are the flags given, by their long names.
	flags   map[string]string
	command []string
}

// runFlags are the flags of `leaselock run`, by each of their names, to
// their long names. Every one takes a value.
var runFlags = map[string]string{
	"--wait": "wait", "--lease": "lease", "--identity": "identity", "--grace": "grace",
	"--kubeconfig": "kubeconfig", "--context": "context", "--namespace": "namespace", "-n": "namespace",
}

// durationFlags are the flags whose value is a duration.
var durationFlags = []string{"wait", "lease", "grace"}

// parseRun parses args, the arguments of leaselock, as `run NAME [flags]
// -- COMMAND [ARGS...]`, with flags before or after NAME, as --flag value
// or --flag=value.
func parseRun(args []string) (runInvocation, error) {
	if len(args) == 0 || args[0] != "run" {
		return runInvocation{}, fmt.Errorf("leaselock %q: want the subcommand run", args)
	}
	inv := runInvocation{flags: map[string]string{}}
	rest := args[1:]
	for len(rest) > 0 {
		arg := rest[0]
		rest = rest[1:]
		if arg == "--" {
			inv.command, rest = rest, nil
			break
		}
		if !strings.HasPrefix(arg, "-") {
			if inv.lock != "" {
				return runInvocation{}, fmt.Errorf("lock names %q and %q: want one, and the command after --", inv.lock, arg)
			}
			inv.lock = arg
			continue
		}
		name, value, hasValue := strings.Cut(arg, "=")
		long, ok := runFlags[name]
		if !ok {
			return runInvocation{}, fmt.Errorf("unknown flag %s", name)
		}
		if !hasValue {
			if len(rest) == 0 {
				return runInvocation{}, fmt.Errorf("flag %s: no value", name)
			}
			value, rest = rest[0], rest[1:]
		}
		if _, dup := inv.flags[long]; dup {
			return runInvocation{}, fmt.Errorf("flag --%s given twice", long)
		}
		if slices.Contains(durationFlags, long) {
			if _, err := time.ParseDuration(value); err != nil {
				return runInvocation{}, fmt.Errorf("flag --%s: %w", long, err)
			}
		}
		inv.flags[long] = value
	}
	switch {
	case inv.lock == "":
		return runInvocation{}, errors.New("no lock name")
	case len(inv.command) == 0:
		return runInvocation{}, errors.New("no command after --")
	}
	return inv, nil
}

func TestParseRun(t *testing.T) {
	tests := []struct {
		name    string
		args    string
		lock    string
		flags   map[string]string
		command string
		wantErr bool
	}{
		{name: "plain", args: "run a -- /app/x", lock: "a", flags: map[string]string{}, command: "/app/x"},
		{name: "flags after the name", args: "run a --wait 0 -n ns -- x y", lock: "a", flags: map[string]string{"wait": "0", "namespace": "ns"}, command: "x y"},
		{name: "flags before the name, with =", args: "run --wait=10m --namespace=ns a -- x", lock: "a", flags: map[string]string{"wait": "10m", "namespace": "ns"}, command: "x"},
		{name: "flags of the command are its own", args: "run a -- x --wait 5", lock: "a", flags: map[string]string{}, command: "x --wait 5"},
		{name: "another subcommand", args: "status a", wantErr: true},
		{name: "no lock name", args: "run --wait 0 -- x", wantErr: true},
		{name: "two lock names", args: "run a b -- x", wantErr: true},
		{name: "no --", args: "run a x", wantErr: true},
		{name: "no command", args: "run a --", wantErr: true},
		{name: "misspelled flag", args: "run a --wiat 0 -- x", wantErr: true},
		{name: "flag without its value", args: "run a --wait", wantErr: true},
		{name: "bad duration", args: "run a --wait 10 -- x", wantErr: true},
		{name: "flag given twice", args: "run a -n x --namespace y -- x", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv, err := parseRun(strings.Fields(tt.args))
			if tt.wantErr {
				if err == nil {
					t.Errorf("parseRun(%q): got %+v, want an error", tt.args, inv)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseRun(%q): %v", tt.args, err)
			}
			if inv.lock != tt.lock || strings.Join(inv.command, " ") != tt.command || fmt.Sprint(inv.flags) != fmt.Sprint(tt.flags) {
				t.Errorf("parseRun(%q): got lock %q, flags %v, command %q, want %q, %v, %q",
					tt.args, inv.lock, inv.flags, inv.command, tt.lock, tt.flags, tt.command)
			}
		})
	}
}

// podNameFromDownwardAPI reports whether c sets POD_NAME to its Pod's name.
func podNameFromDownwardAPI(c *corev1.Container) bool {
	return slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "POD_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil &&
			e.ValueFrom.FieldRef.FieldPath == "metadata.name"
	})
}

// mountOf returns the volume mount of c that holds file, if any.
func mountOf(c *corev1.Container, file string) (corev1.VolumeMount, bool) {
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/") {
			return m, true
		}
	}
	return corev1.VolumeMount{}, false
}

// checkBinary checks that the leaselock of lc is there when lc starts: in
// its image, or on a volume that an init container before it writes.
func checkBinary(spec *corev1.PodSpec, lc lockContainer) error {
	m, ok := mountOf(lc.container, lc.argv[0])
	if !ok {
		return nil
	}
	before := spec.InitContainers
	if lc.init {
		before = before[:slices.IndexFunc(before, func(c corev1.Container) bool { return c.Name == lc.container.Name })]
	}
	for _, c := range before {
		if slices.ContainsFunc(c.VolumeMounts, func(w corev1.VolumeMount) bool { return w.Name == m.Name && !w.ReadOnly }) {
			return nil
		}
	}
	return fmt.Errorf("%s is on volume %s, which no init container before it writes", lc.argv[0], m.Name)
}

// checkCredentials checks that lc reaches its lock with rights that rbac.yaml
// gives: with sa, the ServiceAccount of rbac.yaml, in the Pod's namespace,
// or with a kubeconfig from a Secret, in the Role's namespace.
func checkCredentials(spec *corev1.PodSpec, lc lockContainer, inv runInvocation, sa *corev1.ServiceAccount) error {
	kubeconfig, ok := inv.flags["kubeconfig"]
	if !ok {
		if spec.ServiceAccountName != sa.Name {
			return fmt.Errorf("serviceAccountName %q, want %q, the ServiceAccount of rbac.yaml", spec.ServiceAccountName, sa.Name)
		}
		if !ptr.Deref(spec.AutomountServiceAccountToken, true) {
			return errors.New("automountServiceAccountToken is false, and leaselock has no --kubeconfig")
		}
		if ns, ok := inv.flags["namespace"]; ok {
			return fmt.Errorf("-n %s with the Pod's ServiceAccount: leave it out, the Lease is in the Pod's namespace", ns)
		}
		return nil
	}
	m, ok := mountOf(lc.container, kubeconfig)
	if !ok {
		return fmt.Errorf("--kubeconfig %s is on no volume of the container", kubeconfig)
	}
	i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
	if i < 0 || spec.Volumes[i].Secret == nil {
		return fmt.Errorf("--kubeconfig %s: volume %s is not a Secret", kubeconfig, m.Name)
	}
	if ns := inv.flags["namespace"]; ns != sa.Namespace {
		return fmt.Errorf("--kubeconfig with -n %q, want -n %s, the namespace of rbac.yaml", ns, sa.Namespace)
	}
	return nil
}

// TestLeaselockContainers checks every container of the manifests that
// runs leaselock: it runs `leaselock run` with a valid lock name and a
// command, its Lease names the Pod (POD_NAME from the downward API), its
// binary is there when it starts, and it has the rights of rbac.yaml.
func TestLeaselockContainers(t *testing.T) {
	ms := manifests(t)
	sa := only[*corev1.ServiceAccount](t, ms)
	perFile := map[string]int{}
	for _, m := range ms {
		spec, ok := podSpec(m.obj)
		if !ok {
			continue
		}
		for _, lc := range lockContainers(spec) {
			perFile[m.file]++
			t.Run(fmt.Sprintf("%s/%s", m, lc.container.Name), func(t *testing.T) {
				inv, err := parseRun(lc.argv[1:])
				if err != nil {
					t.Fatalf("command %q: %v", lc.argv, err)
				}
				if err := resourcelock.ValidateLockName(inv.lock); err != nil {
					t.Error(err)
				}
				if !podNameFromDownwardAPI(lc.container) {
					t.Error("no POD_NAME from the downward API (fieldPath metadata.name): the Lease would name the host, not the Pod")
				}
				if id, ok := inv.flags["identity"]; ok && !strings.Contains(id, "$(POD_NAME)") {
					t.Errorf("--identity %q: want it to contain $(POD_NAME)", id)
				}
				if err := checkBinary(spec, lc); err != nil {
					t.Error(err)
				}
				if err := checkCredentials(spec, lc, inv, sa); err != nil {
					t.Error(err)
				}
			})
		}
	}
	for _, f := range []string{"job-migration.yaml", "cronjob.yaml"} {
		if perFile[f] == 0 {
			t.Errorf("%s: no container runs leaselock", f)
		}
	}
}

// TestSameNamespace checks that every object is in the namespace of the
// Role: a Pod's ServiceAccount is one of its own namespace, and leaselock
// in a Pod takes its locks there.
func TestSameNamespace(t *testing.T) {
	ms := manifests(t)
	role := only[*rbacv1.Role](t, ms)
	for _, m := range ms {
		if got := m.obj.GetNamespace(); got != role.Namespace {
			t.Errorf("%s: namespace %q, want %q, the Role's", m, got, role.Namespace)
		}
	}
}

// exitAction returns the action that p takes when container exits with
// code, as the Job controller decides it: the first rule on exit codes that
// matches. ok is false when none does, and the failure counts against
// backoffLimit.
func exitAction(p *batchv1.PodFailurePolicy, container string, code int32) (action batchv1.PodFailurePolicyAction, ok bool) {
	if p == nil {
		return "", false
	}
	for _, r := range p.Rules {
		e := r.OnExitCodes
		if e == nil || e.ContainerName != nil && *e.ContainerName != container {
			continue
		}
		if slices.Contains(e.Values, code) == (e.Operator == batchv1.PodFailurePolicyOnExitCodesOpIn) {
			return r.Action, true
		}
	}
	return "", false
}

// TestCronJob checks what keeps the CronJob's runs apart: Forbid in its
// cluster, and the lock, which a run gives up on at once (--wait 0) with
// exit code 75, which its Job does not count as a failure. The codes of a
// real failure still count.
func TestCronJob(t *testing.T) {
	cj := only[*batchv1.CronJob](t, manifests(t))
	if got := cj.Spec.ConcurrencyPolicy; got != batchv1.ForbidConcurrent {
		t.Errorf("concurrencyPolicy: got %q, want %q", got, batchv1.ForbidConcurrent)
	}
	job := cj.Spec.JobTemplate.Spec
	if got := job.Template.Spec.RestartPolicy; got != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy: got %q, want Never, which podFailurePolicy needs", got)
	}
	lcs := lockContainers(&job.Template.Spec)
	if len(lcs) != 1 {
		t.Fatalf("containers that run leaselock: got %d, want 1", len(lcs))
	}
	lc := lcs[0]
	inv, err := parseRun(lc.argv[1:])
	if err != nil {
		t.Fatalf("command %q: %v", lc.argv, err)
	}
	if wait, ok := inv.flags["wait"]; !ok {
		t.Error("no --wait: a run would wait until the lock is free")
	} else if d, _ := time.ParseDuration(wait); d != 0 {
		t.Errorf("--wait %s, want 0", wait)
	}
	tests := []struct {
		code   int32
		ignore bool
	}{
		{75, true},   // the lock was held
		{1, false},   // the command failed
		{124, false}, // the lock was lost while it ran
		{125, false}, // leaselock failed: no connection, forbidden
		{127, false}, // no such command
	}
	for _, tt := range tests {
		action, _ := exitAction(job.PodFailurePolicy, lc.container.Name, tt.code)
		if got := action == batchv1.PodFailurePolicyActionIgnore; got != tt.ignore {
			t.Errorf("exit code %d of %s: ignored %v (action %q), want %v", tt.code, lc.container.Name, got, action, tt.ignore)
		}
	}
}

// leaseVerbs are the verbs on Leases that each subcommand of leaselock
// needs.
var leaseVerbs = []struct {
	subcommand string
	verbs      []string
}{
	{"run", []string{"get", "create", "update", "delete", "watch"}},
	{"status", []string{"list"}},
}

// allows reports whether rules allow verb on Leases.
func allows(rules []rbacv1.PolicyRule, verb string) bool {
	has := func(list []string, s string) bool { return slices.Contains(list, s) || slices.Contains(list, "*") }
	return slices.ContainsFunc(rules, func(r rbacv1.PolicyRule) bool {
		return has(r.APIGroups, "coordination.k8s.io") && has(r.Resources, "leases") && has(r.Verbs, verb)
	})
}

// TestRoleCoversCommand checks that the Role of rbac.yaml allows on Leases
// every verb that run and status need.
func TestRoleCoversCommand(t *testing.T) {
	role := only[*rbacv1.Role](t, manifests(t))
	for _, sub := range leaseVerbs {
		for _, verb := range sub.verbs {
			if !allows(role.Rules, verb) {
				t.Errorf("Role %s does not allow %s on leases, which leaselock %s needs", role.Name, verb, sub.subcommand)
			}
		}
	}
}

// TestManifestsOnServer creates every object of the manifests, in a
// namespace of its own, so that the API server validates them as a cluster
// would (no controller runs there: no Pod starts). Then it asks the server
// whether the ServiceAccount may do on Leases what leaselock needs, and
// nothing it does not.
func TestManifestsOnServer(t *testing.T) {
	ms := manifests(t)
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	ctx := context.Background()
	sa := only[*corev1.ServiceAccount](t, ms)
	for _, m := range ms {
		m.obj.SetNamespace(ns)
		if rb, ok := m.obj.(*rbacv1.RoleBinding); ok {
			for i, s := range rb.Subjects {
				if s.Kind == rbacv1.ServiceAccountKind {
					rb.Subjects[i].Namespace = ns
				}
			}
		}
		if err := c.Create(ctx, m.obj); err != nil {
			t.Errorf("%s: %v", m, err)
		}
	}

	check := func(verb string, want bool) {
		t.Helper()
		review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   "system:serviceaccount:" + ns + ":" + sa.Name,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: ns, Verb: verb, Group: "coordination.k8s.io", Resource: "leases",
			},
		}}
		if err := c.Create(ctx, review); err != nil {
			t.Fatalf("review of %s on leases: %v", verb, err)
		}
		if got := review.Status.Allowed; got != want {
			t.Errorf("ServiceAccount %s may %s leases: got %v, want %v", sa.Name, verb, got, want)
		}
	}
	for _, sub := range leaseVerbs {
		for _, verb := range sub.verbs {
			check(verb, true)
		}
	}
	for _, verb := range []string{"patch", "deletecollection"} {
		check(verb, false)
	}
}
