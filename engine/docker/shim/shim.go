// Package shim exposes the docker provider's internal provider package to this project's bridge build: a module
// whose path is under terraform-provider-docker's may import its internal packages.
package shim

import (
	"github.com/hashicorp/terraform-plugin-sdk/v2/helper/schema"
	docker "github.com/terraform-providers/terraform-provider-docker/internal/provider"
)

func NewProvider(version string) *schema.Provider { return docker.New(version)() }
