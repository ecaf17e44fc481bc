//go:build tools

// Package engine pins the Pulumi CLI's main package so `go build github.com/pulumi/pulumi/pkg/v3/cmd/pulumi`
// resolves from this module's go.mod/go.sum.
package engine

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
