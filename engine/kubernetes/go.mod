module vllm-stack/engine/kubernetes

go 1.24.7

require (
	github.com/pulumi/pulumi-kubernetes/provider/v4 v4.0.0-20260115033456-f47bc2d6f199
	// the provider module's replace points at its repository's ../sdk; the same commit's SDK module
	github.com/pulumi/pulumi-kubernetes/sdk/v4 v4.24.0
)
