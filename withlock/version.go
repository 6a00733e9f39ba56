package withlock

// The check of the API server's release, for what Token's order rests on:
// a Locker that NewForCluster or NewForConfig built asks once, in the
// background, and logs once when the server promises no order.

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/util/version"
	apiversion "k8s.io/apimachinery/pkg/version"
)

// tokensOrderedSince is the first Kubernetes release that promises that
// the resourceVersions of one resource compare as numbers, which the order
// of fencing tokens (Token) rests on.
var tokensOrderedSince = version.MajorMinor(1, 35)

// versionTimeout bounds the check's one request.
const versionTimeout = 30 * time.Second

// serverVersioner tells the server's release: a discovery client.
type serverVersioner interface {
	ServerVersionWithContext(ctx context.Context) (*apiversion.Info, error)
}

// startVersionCheck asks sv the server's release once, in the background
// until it answers or l is closed, and logs through l's logger when the
// server is older than tokensOrderedSince. A server that cannot be asked,
// or tells no release, is logged at V(1) alone: the check only informs.
func (l *Locker) startVersionCheck(sv serverVersioner) {
	l.background.Go(func() {
		ctx, cancel := context.WithTimeout(l.stop, versionTimeout)
		defer cancel()
		info, err := sv.ServerVersionWithContext(ctx)
		if err != nil {
			if l.stop.Err() == nil {
				l.log.V(1).Info("could not ask the API server its release", "error", err)
			}
			return
		}
		switch ordered, err := tokensOrdered(info.GitVersion); {
		case err != nil:
			l.log.V(1).Info("the API server tells no release", "serverVersion", info.GitVersion, "error", err)
		case !ordered:
			l.log.Info(fmt.Sprintf("the API server is older than Kubernetes %s, which promises the order of resourceVersions: "+
				"the fencing tokens of withlock.Token are unique to each acquisition and renewal, and grow as etcd's revisions do, "+
				"but the server does not promise it", tokensOrderedSince), "serverVersion", info.GitVersion)
		}
	})
}

// tokensOrdered reports whether a server whose gitVersion is v promises the
// order of fencing tokens. A v of release 0 (an unstamped build) is an
// error: it tells no release.
func tokensOrdered(v string) (bool, error) {
	parsed, err := version.ParseGeneric(v)
	if err != nil {
		return false, err
	}
	if parsed.Major() == 0 {
		return false, fmt.Errorf("release 0 (%q) is an unstamped build", v)
	}
	return parsed.AtLeast(tokensOrderedSince), nil
}
