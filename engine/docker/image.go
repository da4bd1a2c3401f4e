package main

// docker:index/image:Image, the one pulumi-docker resource that is not Terraform's: pulumi-docker builds it with its
// own code, in the module the Go module proxy refuses. This is this project's implementation, for what the vLLM
// image needs: a local build (Docker Engine API, the classic builder) of a context folder with a Dockerfile, build
// arguments and a platform, tagged with imageName; no push (skipPush: false is refused). Everything else of the
// provider is kreuzwerker's docker provider through the bridge.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/client"
	"github.com/moby/go-archive"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/protobuf/types/known/emptypb"
)

const imageType = "docker:index/image:Image"

var marshal = plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true, SkipNulls: true}

// withImage serves docker:index/image:Image itself and hands every other request to the bridged provider.
type withImage struct {
	pulumirpc.ResourceProviderServer
	host string // the provider's `host` setting, else DOCKER_HOST
}

func isImage(urn string) bool { return resource.URN(urn).Type() == imageType }

func (p *withImage) Configure(ctx context.Context, req *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	if req.Args != nil {
		if h, ok := req.Args.AsMap()["host"].(string); ok {
			p.host = h
		}
	}
	return p.ResourceProviderServer.Configure(ctx, req)
}

func (p *withImage) Check(ctx context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	if !isImage(req.Urn) {
		return p.ResourceProviderServer.Check(ctx, req)
	}
	news, err := plugin.UnmarshalProperties(req.News, marshal)
	if err != nil {
		return nil, err
	}
	var failures []*pulumirpc.CheckFailure
	if v, ok := news["imageName"]; !ok || (v.IsString() && v.StringValue() == "") {
		failures = append(failures, &pulumirpc.CheckFailure{Property: "imageName", Reason: "imageName is required"})
	}
	if v, ok := news["skipPush"]; ok && v.IsBool() && !v.BoolValue() {
		failures = append(failures, &pulumirpc.CheckFailure{Property: "skipPush", Reason: "this build of the docker provider builds locally only: set skipPush: true"})
	}
	return &pulumirpc.CheckResponse{Inputs: req.News, Failures: failures}, nil
}

func (p *withImage) Diff(ctx context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	if !isImage(req.Urn) {
		return p.ResourceProviderServer.Diff(ctx, req)
	}
	olds, err := plugin.UnmarshalProperties(req.OldInputs, marshal)
	if err != nil {
		return nil, err
	}
	news, err := plugin.UnmarshalProperties(req.News, marshal)
	if err != nil {
		return nil, err
	}
	diff := olds.Diff(news)
	if diff == nil || !diff.AnyChanges() {
		return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE}, nil
	}
	var changed []string
	for _, k := range diff.ChangedKeys() {
		changed = append(changed, string(k))
	}
	// a new build is a new image: replaced, as pulumi-docker does when the name or the build changes
	return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_SOME, Diffs: changed, Replaces: changed, DeleteBeforeReplace: false}, nil
}

func (p *withImage) Create(ctx context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	if !isImage(req.Urn) {
		return p.ResourceProviderServer.Create(ctx, req)
	}
	inputs, err := plugin.UnmarshalProperties(req.Properties, marshal)
	if err != nil {
		return nil, err
	}
	outs := outputs(inputs)
	if req.Preview {
		outs["repoDigest"] = resource.MakeComputed(resource.NewStringProperty(""))
	} else {
		id, err := p.build(ctx, inputs)
		if err != nil {
			return nil, err
		}
		outs["repoDigest"] = resource.NewStringProperty("")
		outs["imageId"] = resource.NewStringProperty(id)
	}
	props, err := plugin.MarshalProperties(outs, marshal)
	if err != nil {
		return nil, err
	}
	name := inputs["imageName"]
	id := ""
	if name.IsString() {
		id = name.StringValue()
	}
	return &pulumirpc.CreateResponse{Id: id, Properties: props}, nil
}

func (p *withImage) Read(ctx context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	if !isImage(req.Urn) {
		return p.ResourceProviderServer.Read(ctx, req)
	}
	return &pulumirpc.ReadResponse{Id: req.Id, Properties: req.Properties, Inputs: req.Inputs}, nil
}

func (p *withImage) Update(ctx context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	if !isImage(req.Urn) {
		return p.ResourceProviderServer.Update(ctx, req)
	}
	return nil, errors.New("docker:index/image:Image is replaced, never updated")
}

// Delete keeps the image, as pulumi-docker does: containers of other stacks may run it.
func (p *withImage) Delete(ctx context.Context, req *pulumirpc.DeleteRequest) (*emptypb.Empty, error) {
	if !isImage(req.Urn) {
		return p.ResourceProviderServer.Delete(ctx, req)
	}
	return &emptypb.Empty{}, nil
}

func outputs(in resource.PropertyMap) resource.PropertyMap {
	out := in.Copy()
	out["baseImageName"] = in["imageName"]
	out["registryServer"] = resource.NewStringProperty("")
	if b, ok := in["build"]; ok && b.IsObject() {
		for _, k := range []resource.PropertyKey{"context", "dockerfile", "platform"} {
			if v, ok := b.ObjectValue()[k]; ok {
				out[k] = v
			}
		}
	}
	return out
}

func str(m resource.PropertyMap, k resource.PropertyKey) string {
	if v, ok := m[k]; ok && v.IsString() {
		return v.StringValue()
	}
	return ""
}

// build runs the Docker Engine API's build of the context folder and returns the image ID.
func (p *withImage) build(ctx context.Context, in resource.PropertyMap) (string, error) {
	var b resource.PropertyMap
	if v, ok := in["build"]; ok && v.IsObject() {
		b = v.ObjectValue()
	}
	contextDir := str(b, "context")
	if contextDir == "" {
		contextDir = "."
	}
	dockerfile := str(b, "dockerfile")
	if dockerfile == "" {
		dockerfile = filepath.Join(contextDir, "Dockerfile")
	}
	rel, err := filepath.Rel(contextDir, dockerfile)
	if err != nil || strings.HasPrefix(rel, "..") {
		return "", fmt.Errorf("build.dockerfile %s is outside build.context %s", dockerfile, contextDir)
	}
	args := map[string]*string{}
	if v, ok := b["args"]; ok && v.IsObject() {
		for k, a := range v.ObjectValue() {
			if a.IsSecret() {
				a = a.SecretValue().Element
			}
			s := a.StringValue()
			args[string(k)] = &s
		}
	}
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if p.host != "" {
		opts = append(opts, client.WithHost(p.host))
	}
	cli, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return "", err
	}
	defer cli.Close()
	tar, err := archive.TarWithOptions(contextDir, &archive.TarOptions{})
	if err != nil {
		return "", err
	}
	defer tar.Close()
	name := str(in, "imageName")
	resp, err := cli.ImageBuild(ctx, tar, build.ImageBuildOptions{
		Tags: []string{name}, Dockerfile: filepath.ToSlash(rel), BuildArgs: args, Platform: str(b, "platform"),
		Remove: true, ForceRemove: true, Version: build.BuilderV1,
	})
	if err != nil {
		return "", fmt.Errorf("building %s: %w", name, err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	var log strings.Builder
	for {
		var msg struct {
			Stream      string `json:"stream"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			break
		} else if err != nil {
			return "", err
		}
		log.WriteString(msg.Stream)
		if msg.ErrorDetail != nil {
			return "", fmt.Errorf("building %s: %s\n%s", name, msg.ErrorDetail.Message, log.String())
		}
	}
	inspect, err := cli.ImageInspect(ctx, name)
	if err != nil {
		return "", fmt.Errorf("built %s but cannot inspect it: %w", name, err)
	}
	fmt.Fprintf(os.Stderr, "built %s (%s)\n", name, inspect.ID)
	return inspect.ID, nil
}
