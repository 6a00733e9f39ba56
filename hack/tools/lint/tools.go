//go:build tools

// Package tools pins staticcheck at the version named in go.mod.
package tools

import _ "honnef.co/go/tools/cmd/staticcheck"
