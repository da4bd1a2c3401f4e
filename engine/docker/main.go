// pulumi-resource-docker for `make engine`: kreuzwerker's Terraform docker provider (a Go module) served through
// the Pulumi Terraform bridge with the token names of pulumi-docker, because the Go module proxy refuses
// pulumi-docker's own provider module. docker:index/image:Image, pulumi-docker's own code there, is image.go's.
// `pulumi-resource-docker --write-schema` writes the Pulumi schema this mapping gives and the bridge's metadata beside
// the binary (scripts/engine.sh runs it after the build): GetSchema serves the one, the bridge reads the other.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge/tokens"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfgen"
	shimv2 "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfshim/sdk-v2"
	"github.com/pulumi/pulumi-terraform-bridge/v3/unstable/metadata"
	"github.com/pulumi/pulumi/pkg/v3/resource/provider"
	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/diag/colors"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/terraform-providers/terraform-provider-docker/shim"
)

// version is the pulumi-docker release whose Python SDK the project pins; set with -X main.version.
var version = "0.0.0-dev"

func info() tfbridge.ProviderInfo {
	p := tfbridge.ProviderInfo{
		P:       shimv2.NewProvider(shim.NewProvider(version)),
		Name:    "docker",
		Version: version,
		// what tfgen records (renames, aliases)
		MetadataInfo: tfbridge.NewProviderMetadata(readBeside(".metadata.json", []byte("{}"))),
		// pulumi-docker's names where they are not the Terraform name in camel case (pulumi_docker/__init__.py)
		Resources: map[string]*tfbridge.ResourceInfo{
			// list attributes the bridge would pluralize (commands, networksAdvanceds) keep pulumi-docker's names
			"docker_container": {Fields: map[string]*tfbridge.SchemaInfo{
				"command":           {Name: "command"},
				"networks_advanced": {Name: "networksAdvanced"},
			}},
			"docker_image":  {Tok: "docker:index/remoteImage:RemoteImage"},
			"docker_config": {Tok: "docker:index/serviceConfig:ServiceConfig"},
		},
		DataSources: map[string]*tfbridge.DataSourceInfo{
			"docker_image": {Tok: "docker:index/getRemoteImage:getRemoteImage"},
		},
	}
	p.MustComputeTokens(tokens.SingleModule("docker_", "index", tokens.MakeStandard("docker")))
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
	schema := readBeside(".schema.json", nil)
	prov := info()
	prov.P.InitLogging(context.Background())
	err := provider.Main("docker", func(host *provider.HostClient) (pulumirpc.ResourceProviderServer, error) {
		bridged := tfbridge.NewProvider(context.Background(), host, "docker", version, prov.P, prov, schema)
		return &withImage{ResourceProviderServer: bridged}, nil
	})
	if err != nil {
		cmdutil.ExitError(err.Error())
	}
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
