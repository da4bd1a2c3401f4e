// pulumi-resource-random for `make engine`: the Terraform random provider (hashicorp, a Go module) served through
// the Pulumi Terraform bridge with the token names of pulumi-random (random_password -> random:index/randomPassword:
// RandomPassword), because the Go module proxy refuses pulumi-random's own provider module.
// `pulumi-resource-random --write-schema` prints the Pulumi schema this mapping gives (scripts/engine.sh keeps it
// beside the binary; tests compare it with the pinned Python SDK).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	pf "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge/tokens"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfgen"
	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/diag/colors"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/terraform-providers/terraform-provider-random/shim"
)

// version is the pulumi-random release whose Python SDK the project pins; set with -X main.version.
var version = "0.0.0-dev"

func info() tfbridge.ProviderInfo {
	p := tfbridge.ProviderInfo{
		P:       pf.ShimProvider(shim.NewProvider()),
		Name:    "random",
		Version: version,
	}
	// pulumi-random names every resource Random<Name> in the index module
	p.MustComputeTokens(tokens.SingleModule("random_", "index", func(module, name string) (string, error) {
		return tokens.MakeStandard("random")(module, "Random"+name)
	}))
	return p
}

func schemaFile() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return filepath.Join(filepath.Dir(exe), filepath.Base(exe)+".schema.json")
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--write-schema" {
		sink := diag.DefaultSink(os.Stderr, os.Stderr, diag.FormatOptions{Color: colors.Never})
		spec, err := tfgen.GenerateSchema(info(), sink)
		if err == nil {
			err = json.NewEncoder(os.Stdout).Encode(spec)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	pf.Main(context.Background(), "random", info(), pf.ProviderMetadata{
		XGetSchema: func(context.Context, plugin.GetSchemaRequest) ([]byte, error) { return os.ReadFile(schemaFile()) },
	})
}
