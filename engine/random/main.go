// pulumi-resource-random for `make engine`: the Terraform random provider (hashicorp, a Go module) served through
// the Pulumi Terraform bridge with the token names of pulumi-random (random_password -> random:index/randomPassword:
// RandomPassword), because the Go module proxy refuses pulumi-random's own provider module.
// `pulumi-resource-random --write-schema` writes the Pulumi schema this mapping gives and the bridge's metadata beside
// the binary (scripts/engine.sh runs it after the build): GetSchema serves the one, the bridge reads the other.
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
	"github.com/pulumi/pulumi-terraform-bridge/v3/unstable/metadata"
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
		// what tfgen records (renames, aliases); the pf bridge refuses to start without it
		MetadataInfo: tfbridge.NewProviderMetadata(readBeside(".metadata.json", []byte("{}"))),
	}
	// pulumi-random names every resource Random<Name> in the index module
	p.MustComputeTokens(tokens.SingleModule("random_", "index", func(module, name string) (string, error) {
		return tokens.MakeStandard("random")(module, "Random"+name)
	}))
	return p
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--write-schema" {
		if err := writeSchema(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	pf.Main(context.Background(), "random", info(), pf.ProviderMetadata{
		XGetSchema: func(context.Context, plugin.GetSchemaRequest) ([]byte, error) {
			return os.ReadFile(beside(".schema.json"))
		},
	})
}

// beside is the path of a file named after this executable plus suffix, in its folder.
func beside(suffix string) string {
	exe, err := os.Executable()
	if err != nil {
		return suffix
	}
	return filepath.Join(filepath.Dir(exe), filepath.Base(exe)+suffix)
}

func readBeside(suffix string, fallback []byte) []byte {
	if b, err := os.ReadFile(beside(suffix)); err == nil {
		return b
	}
	return fallback
}

// writeSchema generates the schema from the mapping (the bridge's tfgen, in process) and writes it and the
// metadata tfgen filled in beside the executable.
func writeSchema() error {
	p := info()
	sink := diag.DefaultSink(os.Stderr, os.Stderr, diag.FormatOptions{Color: colors.Never})
	spec, err := tfgen.GenerateSchema(p, sink)
	if err != nil {
		return err
	}
	schema, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	if err := os.WriteFile(beside(".schema.json"), schema, 0o644); err != nil {
		return err
	}
	return os.WriteFile(beside(".metadata.json"), (*metadata.Data)(p.MetadataInfo.Data).Marshal(), 0o644)
}
