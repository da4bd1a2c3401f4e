module vllm-stack/engine/random

go 1.26.6

require (
	github.com/pulumi/pulumi-terraform-bridge/v3 v3.120.0
	github.com/pulumi/pulumi/sdk/v3 v3.218.0
	github.com/terraform-providers/terraform-provider-random/shim v0.0.0
)

replace (
	// the bridge's fork of the SDK (its go.mod names it; replaces in dependencies do not apply), at the commit whose
	// terraform-plugin-go (v0.31) the upstream provider needs: the bridge's own pin (20250923) lacks GenerateResourceConfig
	github.com/hashicorp/terraform-plugin-sdk/v2 => github.com/pulumi/terraform-plugin-sdk/v2 v2.0.0-20260318212141-5525259d096b
	github.com/terraform-providers/terraform-provider-random/shim => ./shim
)
