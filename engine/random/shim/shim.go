// Package shim exposes the random provider's internal provider package to this project's bridge build: a module
// whose path is under terraform-provider-random's may import its internal packages.
package shim

import (
	"github.com/hashicorp/terraform-plugin-framework/provider"
	random "github.com/terraform-providers/terraform-provider-random/internal/provider"
)

func NewProvider() provider.Provider { return random.New() }
