module vllm-stack/engine/pulumi

go 1.26.6

// The CLI as `go install` would build it, were it allowed with replace lines: pkg/v3 and sdk/v3 at one version,
// and pkg/v3's go.mod replace repeated (replaces in dependencies do not apply). scripts/engine.sh resolves the
// rest with `go mod tidy` in its build folder.
require (
	github.com/pulumi/pulumi/pkg/v3 v3.274.0
	github.com/pulumi/pulumi/sdk/v3 v3.274.0
)

replace github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e

tool github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
