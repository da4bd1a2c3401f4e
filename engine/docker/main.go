// pulumi-resource-docker for `make engine`: kreuzwerker's Terraform docker provider (a Go module) served through
// the Pulumi Terraform bridge with the token names of pulumi-docker, because the Go module proxy refuses
// pulumi-docker's own provider module. Not included: pulumi-docker's native docker:index/image:Image (its own
// buildkit code in that refused module); every bridged resource is (Container, Network, Volume, RemoteImage, ...).
// `pulumi-resource-docker --write-schema` prints the Pulumi schema this mapping gives (scripts/engine.sh keeps it
// beside the binary; tests compare it with the pinned Python SDK).
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
	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/diag/colors"
	"github.com/pulumi/pulumi/pkg/v3/resource/provider"
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
		// pulumi-docker's names where they are not the Terraform name in camel case (pulumi_docker/__init__.py)
		Resources: map[string]*tfbridge.ResourceInfo{
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
	var schema []byte
	if exe, err := os.Executable(); err == nil {
		schema, _ = os.ReadFile(filepath.Join(filepath.Dir(exe), filepath.Base(exe)+".schema.json"))
	}
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
