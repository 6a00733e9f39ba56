package resourcelock

// Validation of what a caller passes, before any request is sent.

import (
	"fmt"
	"strings"
	"unicode/utf8"

	apivalidation "k8s.io/apimachinery/pkg/api/validation"
)

// check rejects what cannot work before any request is sent.
func (rl *ResourceLocker) check(name, lockerID string) error {
	switch {
	case rl == nil:
		return errNilLocker
	case rl.client == nil:
		return errNilClient
	case rl.err != nil:
		return rl.err
	}
	if err := ValidateLockName(name); err != nil {
		return err
	}
	if lockerID == "" {
		return errEmptyLockerID
	}
	if !utf8.ValidString(lockerID) {
		// The API server would store it mended, and the Lease would then
		// never be this lockerID's.
		return fmt.Errorf("resourcelock: invalid lockerID %q: not valid UTF-8", lockerID)
	}
	return nil
}

// ValidateLockName returns an error unless name is a valid Lease name: a
// lowercase RFC 1123 subdomain of at most 253 characters.
func ValidateLockName(name string) error {
	if name == "" {
		return fmt.Errorf("resourcelock: invalid lock name %q: must not be empty", name)
	}
	if msgs := apivalidation.NameIsDNSSubdomain(name, false); len(msgs) > 0 {
		return fmt.Errorf("resourcelock: invalid lock name %q: %s", name, strings.Join(msgs, "; "))
	}
	return nil
}

// ValidateNamespace returns an error unless namespace is a valid namespace
// name.
func ValidateNamespace(namespace string) error {
	if namespace == "" {
		return fmt.Errorf("resourcelock: invalid namespace %q: must not be empty", namespace)
	}
	if msgs := apivalidation.ValidateNamespaceName(namespace, false); len(msgs) > 0 {
		return fmt.Errorf("resourcelock: invalid namespace %q: %s", namespace, strings.Join(msgs, "; "))
	}
	return nil
}
