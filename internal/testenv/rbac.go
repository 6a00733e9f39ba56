package testenv

import (
	"bytes"
	"context"
	"os"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ReadRole returns the first Role in the YAML file at path, whose
// documents are separated by "---" lines.
func ReadRole(t testing.TB, path string) *rbacv1.Role {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("testenv: decode %s: %v", path, err)
		}
		if role, ok := obj.(*rbacv1.Role); ok {
			return role
		}
	}
	t.Fatalf("testenv: no Role in %s", path)
	return nil
}

// Grant creates role's rules in ns, as a Role of role's name, and a
// RoleBinding of that name that binds it to user, with admin's client.
func Grant(t testing.TB, admin client.Client, ns, user string, role *rbacv1.Role) {
	t.Helper()
	r := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: role.Name, Namespace: ns}, Rules: role.Rules}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name, Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}
	for _, obj := range []client.Object{r, binding} {
		if err := admin.Create(context.Background(), obj); err != nil {
			t.Fatalf("testenv: grant %s to %s in %s: %v", role.Name, user, ns, err)
		}
	}
}

// RoleConfig returns the config of a new user who may do only what rules
// allow, in namespace ns (see Grant).
func RoleConfig(t testing.TB, admin client.Client, ns, user string, rules ...rbacv1.PolicyRule) *rest.Config {
	t.Helper()
	Grant(t, admin, ns, user, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: user}, Rules: rules})
	return UserConfig(t, user)
}

// LeaseRule allows verbs on Leases.
func LeaseRule(verbs ...string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: verbs}
}
