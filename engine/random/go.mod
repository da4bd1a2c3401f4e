module vllm-stack/engine/random

go 1.26.6

require (
	github.com/pulumi/pulumi-terraform-bridge/v3 v3.120.0
	github.com/pulumi/pulumi/sdk/v3 v3.218.0
	github.com/terraform-providers/terraform-provider-random/shim v0.0.0
)

replace (
	// the bridge's own replace (its go.mod), repeated: replaces in dependencies do not apply
	github.com/hashicorp/terraform-plugin-sdk/v2 => github.com/pulumi/terraform-plugin-sdk/v2 v2.0.0-20250923233607-7f1981c8674a
	github.com/terraform-providers/terraform-provider-random/shim => ./shim
)
