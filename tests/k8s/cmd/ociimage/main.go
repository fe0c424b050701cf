// ociimage writes a one-layer OCI image archive (oci-layout, index.json with
// the image name as org.opencontainers.image.ref.name and
// io.containerd.image.name) that `ctr images import` loads: no registry is
// reachable here, so the local kubelet's images are made from local files.
//
//	ociimage -o out.tar -name registry.k8s.io/pause:3.10 -entrypoint /pause /pause=path/to/pause
//	ociimage -o out.tar -name NAME /bin/busybox=/bin/busybox /bin/sh->busybox
//
// DST=SRC copies a file (mode kept, owner root); DST->TARGET is a symlink.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int               `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    map[string]string `json:"platform,omitempty"`
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "ociimage: "+format+"\n", a...)
	os.Exit(1)
}

// The layer: every parent folder, then each entry, sorted, fixed times.
func layer(entries []string) (tarball, diffID []byte) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	epoch := time.Unix(0, 0)
	dirs := map[string]bool{}
	sort.Strings(entries)
	for _, e := range entries {
		var dst string
		if i := strings.Index(e, "->"); i > 0 {
			dst = e[:i]
		} else if i := strings.Index(e, "="); i > 0 {
			dst = e[:i]
		} else {
			fail("entry %q is neither DST=SRC nor DST->TARGET", e)
		}
		for d := path.Dir(path.Clean(dst)); d != "/" && d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	var ds []string
	for d := range dirs {
		ds = append(ds, d)
	}
	sort.Strings(ds)
	for _, d := range ds {
		hdr := &tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755, ModTime: epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			fail("%v", err)
		}
	}
	for _, e := range entries {
		if i := strings.Index(e, "->"); i > 0 {
			hdr := &tar.Header{Typeflag: tar.TypeSymlink, Name: strings.TrimPrefix(path.Clean(e[:i]), "/"), Linkname: e[i+2:], Mode: 0o777, ModTime: epoch}
			if err := tw.WriteHeader(hdr); err != nil {
				fail("%v", err)
			}
			continue
		}
		i := strings.Index(e, "=")
		dst, src := e[:i], e[i+1:]
		data, err := os.ReadFile(src)
		if err != nil {
			fail("%v", err)
		}
		st, err := os.Stat(src)
		if err != nil {
			fail("%v", err)
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(path.Clean(dst), "/"), Mode: int64(st.Mode().Perm()), Size: int64(len(data)), ModTime: epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			fail("%v", err)
		}
		if _, err := tw.Write(data); err != nil {
			fail("%v", err)
		}
	}
	if err := tw.Close(); err != nil {
		fail("%v", err)
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		fail("%v", err)
	}
	if err := zw.Close(); err != nil {
		fail("%v", err)
	}
	return gz.Bytes(), []byte(digest(raw.Bytes()))
}

func main() {
	out := flag.String("o", "", "the archive to write")
	name := flag.String("name", "", "the image name, e.g. registry.k8s.io/pause:3.10")
	entrypoint := flag.String("entrypoint", "", "the image's entrypoint (space-separated)")
	flag.Parse()
	if *out == "" || *name == "" || flag.NArg() == 0 {
		fail("usage: ociimage -o OUT.tar -name NAME [-entrypoint CMD] DST=SRC|DST->TARGET ...")
	}
	layerGz, diffID := layer(flag.Args())
	cfg := map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{"Env": []string{"PATH=/bin:/usr/bin"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{string(diffID)}},
	}
	if *entrypoint != "" {
		cfg["config"].(map[string]any)["Entrypoint"] = strings.Fields(*entrypoint)
	}
	cfgJSON, _ := json.Marshal(cfg)
	manifest := map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: digest(cfgJSON), Size: len(cfgJSON)},
		"layers":        []descriptor{{MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Digest: digest(layerGz), Size: len(layerGz)}},
	}
	manJSON, _ := json.Marshal(manifest)
	index := map[string]any{
		"schemaVersion": 2,
		"manifests": []descriptor{{
			MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: digest(manJSON), Size: len(manJSON),
			Annotations: map[string]string{"org.opencontainers.image.ref.name": *name, "io.containerd.image.name": *name},
			Platform:    map[string]string{"architecture": "amd64", "os": "linux"},
		}},
	}
	indexJSON, _ := json.Marshal(index)
	f, err := os.CreateTemp(path.Dir(*out), ".ociimage-*")
	if err != nil {
		fail("%v", err)
	}
	tw := tar.NewWriter(f)
	put := func(n string, b []byte) {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(b)), ModTime: time.Unix(0, 0)}); err != nil {
			fail("%v", err)
		}
		if _, err := tw.Write(b); err != nil {
			fail("%v", err)
		}
	}
	put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	for _, b := range [][]byte{layerGz, cfgJSON, manJSON} {
		put("blobs/sha256/"+strings.TrimPrefix(digest(b), "sha256:"), b)
	}
	put("index.json", indexJSON)
	if err := tw.Close(); err != nil {
		fail("%v", err)
	}
	if err := f.Close(); err != nil {
		fail("%v", err)
	}
	if err := os.Rename(f.Name(), *out); err != nil {
		fail("%v", err)
	}
}
