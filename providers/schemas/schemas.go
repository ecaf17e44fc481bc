// Package schemas holds the published provider schemas MAC's plugins answer GetSchema with:
// pulumi-libvirt 0.5.4, pulumi-command 1.2.1 (copies of ../shared/schemas) and pulumi-random
// 4.21.4 (provider/cmd/pulumi-resource-random/schema.json of pulumi/pulumi-random).
package schemas

import _ "embed"

//go:embed pulumi-libvirt-0.5.4.schema.json
var Libvirt []byte

//go:embed pulumi-command-1.2.1.schema.json
var Command []byte

//go:embed pulumi-random-4.21.4.schema.json
var Random []byte
