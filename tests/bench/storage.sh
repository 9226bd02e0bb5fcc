#!/usr/bin/env bash
# Benchmarks storage (docs/benchmarks.md), local backend. Ratios are measured
# in one run, interleaved, REPS times, on one disk (FLUXBASE_VAR):
#   upload   curl -T (streamed) POST /storage/v1/object/<bucket>/<name> of a 1 MB file
#            (COUNT_1MB times) and a 100 MB file, vs `cp` of the same file
#            into the same directory tree
#   download curl GET of the public URL into a file, vs `cp`
#   tus      the 100 MB file as a resumable upload (TUS creation, then PATCHes
#            of 6 MB, the chunk size Supabase's guide prescribes), vs `cp`
#   s3       the same PUT and GET through the S3 protocol (/storage/v1/s3,
#            curl --aws-sigv4, UNSIGNED-PAYLOAD), reported beside the REST
#            figures and as a ratio to them
# The proxy's upload also fsyncs the file and its directory and commits a
# row; `cp` does neither, so `cp` + fsync (dd conv=fsync) is printed too.
# Each measure starts after a `sync` (untimed): else one measure's fsync
# pays for the writeback of the page-cache bytes the one before left dirty.
#   1 MB again from one Python process (tests/bench/storage-client.py): uploads
#            and downloads over one keep-alive connection vs the same process
#            copying the file, so a process per request (curl, cp) is not what
#            is measured; the ratios named `…-keepalive` are these.
# Small objects: wrk POSTs of 1 KB objects under fresh names, objects/s.
# Transforms: wrk GETs of /render/image/public/… of a 2000×1500 JPEG
# (tests/bench/fixtures) to 500 px WebP, the rendering cache off
# (every request decodes, resizes, encodes), transforms/s; and the same
# to 500 px AVIF (`format=avif`).
# Proxy peak RSS (VmHWM) is printed at the end.
# Then the S3 backend (STORAGE_S3=0 skips it): a proxy with backend = "s3"
# against moto's S3 server on this machine, the same 1 MB and 100 MB
# uploads and downloads, vs curl PUT/GET (SigV4-signed) of the same files
# straight to that server, interleaved, REPS times.
# Prints one line per measurement, RATIO lines last, and writes a CSV.
COUNT_1MB="${COUNT_1MB:-20}"
export FLUXBASE_BENCH_MAJOR="${FLUXBASE_BENCH_MAJOR:-18}"
source "$(dirname "$0")/lib.sh"
bench_start
files="$FLUXBASE_VAR/bench-storage-files-$$"
export FLUXBASE_STORAGE_ROOT="$FLUXBASE_VAR/bench-storage-$$"
export FLUXBASE_STORAGE_FILE_SIZE_LIMIT=$((200 * 1024 * 1024))
export FLUXBASE_STORAGE_TRANSFORM_CACHE_BYTES=0
export FLUXBASE_STORAGE_S3_ENCRYPTION_KEY="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
mkdir -p "$files" "$FLUXBASE_STORAGE_ROOT"
s3=
trap 'kill $proxy $s3 2>/dev/null || true; cluster_stop "$MAJOR" "$dir"; as_root rm -rf "$dir" "$files" "$FLUXBASE_STORAGE_ROOT"' EXIT
SERVICE="$("$BIN" sign '{"role":"service_role"}' --expires-in 86400)"
proxy_start
base="http://127.0.0.1:$http_port/storage/v1"
auth=(-H "apikey: $SERVICE" -H "Authorization: Bearer $SERVICE")
curl -fsS "${auth[@]}" -H 'content-type: application/json' -d '{"name":"bench","public":true}' "$base/bucket" >/dev/null
s3key="$("$BIN" s3-keys create --description bench)"
s3=(--aws-sigv4 "aws:amz:local:s3" --user "$(awk '/access key id/ {print $4}' <<<"$s3key"):$(awk '/secret access key/ {print $4}' <<<"$s3key")"
  -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")

head -c $((1 << 20)) /dev/urandom > "$files/1mb.bin"
head -c $((100 << 20)) /dev/urandom > "$files/100mb.bin"
mkdir -p "$files/cp"
curl -fsS -o /dev/null "${auth[@]}" -H 'content-type: image/jpeg' -X POST \
  --data-binary @"$(dirname "$0")/fixtures/photo-2000x1500.jpg" "$base/object/bench/photo.jpg"
cat > "$work/render.lua" <<'LUA'
wrk.headers["Accept"] = "image/webp,*/*"
LUA

now() { date +%s.%N; }
mbps() { # mbps BYTES START END
  python3 -c "import sys; print(f'{int(sys.argv[1]) / 1048576 / (float(sys.argv[3]) - float(sys.argv[2])):.1f}')" "$@"
}

upload_http() { # upload_http FILE NAME COUNT -> MB/s
  local start end i
  start="$(now)"
  for i in $(seq 1 "$3"); do
    curl -fsS -o /dev/null "${auth[@]}" -H 'content-type: application/octet-stream' -H 'x-upsert: true' \
      -X POST -T "$1" "$base/object/bench/$2-$i"
  done
  end="$(now)"
  mbps $(($(stat -c %s "$1") * $3)) "$start" "$end"
}
download_http() { # download_http NAME SIZE COUNT -> MB/s
  local start end i
  start="$(now)"
  for i in $(seq 1 "$3"); do
    curl -fsS -o "$files/cp/down-$i" "$base/object/public/bench/$1-$i"
  done
  end="$(now)"
  rm -f "$files"/cp/down-*
  mbps $(($2 * $3)) "$start" "$end"
}
upload_s3() { # upload_s3 FILE NAME COUNT -> MB/s of PutObject
  local start end i
  start="$(now)"
  for i in $(seq 1 "$3"); do
    curl -fsS -o /dev/null "${s3[@]}" -H 'content-type: application/octet-stream' -T "$1" "$base/s3/bench/s3-$2-$i"
  done
  end="$(now)"
  mbps $(($(stat -c %s "$1") * $3)) "$start" "$end"
}
download_s3() { # download_s3 NAME SIZE COUNT -> MB/s of GetObject
  local start end i
  start="$(now)"
  for i in $(seq 1 "$3"); do
    curl -fsS -o "$files/cp/down-$i" "${s3[@]}" "$base/s3/bench/s3-$1-$i"
  done
  end="$(now)"
  rm -f "$files"/cp/down-*
  mbps $(($2 * $3)) "$start" "$end"
}
copy() { # copy FILE COUNT [fsync] -> MB/s of cp (or dd with fsync)
  local start end i
  start="$(now)"
  for i in $(seq 1 "$2"); do
    if [ "${3:-}" = fsync ]; then
      dd if="$1" of="$files/cp/copy-$i" bs=1M conv=fsync status=none
    else
      cp "$1" "$files/cp/copy-$i"
    fi
  done
  end="$(now)"
  rm -f "$files"/cp/copy-*
  mbps $(($(stat -c %s "$1") * $2)) "$start" "$end"
}

upload_tus() { # upload_tus FILE NAME -> MB/s: TUS creation, then 6 MB PATCHes
  local size start end location offset=0 chunk=$((6 << 20)) meta
  size="$(stat -c %s "$1")"
  meta="bucketName $(printf bench | base64 -w0),objectName $(printf '%s' "$2" | base64 -w0)"
  local tus=(-H 'tus-resumable: 1.0.0' -H 'x-upsert: true')
  start="$(now)"
  location="$(curl -fsS -o /dev/null -D - "${auth[@]}" "${tus[@]}" -H "upload-length: $size" -H "upload-metadata: $meta" \
    -X POST "$base/upload/resumable" | tr -d '\r' | awk 'tolower($1) == "location:" {print $2}')"
  while [ "$offset" -lt "$size" ]; do
    tail -c +$((offset + 1)) "$1" | head -c "$chunk" | curl -fsS -o /dev/null "${auth[@]}" "${tus[@]}" \
      -H "upload-offset: $offset" -H 'content-type: application/offset+octet-stream' -X PATCH --data-binary @- "$location"
    offset=$((offset + chunk > size ? size : offset + chunk))
  done
  end="$(now)"
  mbps "$size" "$start" "$end"
}

small_lua() { # small_lua REP: 1 KB POSTs under names fresh in this run and rep
  cat > "$work/small.lua" <<LUA
local counter, ids = 0, 0
-- setup runs in the main state and sets the global "id" in each thread's.
function setup(thread) thread:set("id", ids); ids = ids + 1 end
wrk.method = "POST"
wrk.headers["apikey"] = "$SERVICE"
wrk.headers["Authorization"] = "Bearer $SERVICE"
wrk.headers["Content-Type"] = "text/plain"
wrk.body = string.rep("x", 1024)
function request()
  counter = counter + 1
  return wrk.format(nil, "/storage/v1/object/bench/small/$1/" .. id .. "-" .. counter)
end
LUA
}

csv="tests/bench/results/storage-$(date -u +%Y%m%dT%H%M%SZ).csv"
echo "rep,up_1mb,down_1mb,cp_1mb,cp_fsync_1mb,up_100mb,down_100mb,cp_100mb,cp_fsync_100mb,tus_100mb,small_uploads_per_s,ka_up_1mb,ka_down_1mb,ka_cp_1mb,ka_cp_fsync_1mb,transforms_per_s,s3_up_1mb,s3_down_1mb,s3_up_100mb,s3_down_100mb,avif_per_s" > "$csv"
for rep in $(seq 1 "$REPS"); do
  sync; c1="$(copy "$files/1mb.bin" "$COUNT_1MB")"
  sync; u1="$(upload_http "$files/1mb.bin" one "$COUNT_1MB")"
  sync; d1="$(download_http one $((1 << 20)) "$COUNT_1MB")"
  sync; f1="$(copy "$files/1mb.bin" "$COUNT_1MB" fsync)"
  sync; c100="$(copy "$files/100mb.bin" 1)"
  sync; u100="$(upload_http "$files/100mb.bin" hundred 1)"
  sync; d100="$(download_http hundred $((100 << 20)) 1)"
  sync; s3u1="$(upload_s3 "$files/1mb.bin" one "$COUNT_1MB")"
  sync; s3d1="$(download_s3 one $((1 << 20)) "$COUNT_1MB")"
  sync; s3u100="$(upload_s3 "$files/100mb.bin" hundred 1)"
  sync; s3d100="$(download_s3 hundred $((100 << 20)) 1)"
  sync; f100="$(copy "$files/100mb.bin" 1 fsync)"
  sync; t100="$(upload_tus "$files/100mb.bin" "tus-$rep")"
  sync; read -r ku kd kc kf < <(python3 tests/bench/storage-client.py "$http_port" "$SERVICE" "$files/1mb.bin" "$COUNT_1MB" "$files/cp" "$rep")
  small_lua "$rep"
  small="$(wrk_run small.lua storage/v1/object/bench/small)"
  renders="$(wrk_run render.lua 'storage/v1/render/image/public/bench/photo.jpg?width=500')"
  avifs="$(wrk_run render.lua 'storage/v1/render/image/public/bench/photo.jpg?width=500&format=avif')"
  echo "rep $rep: 1 MB up $u1 down $d1 cp $c1 cp+fsync $f1 MB/s | 100 MB up $u100 down $d100 cp $c100 cp+fsync $f100 tus $t100 MB/s | 1 KB uploads $small/s | transforms $renders/s (AVIF $avifs/s)"
  echo "rep $rep: 1 MB keep-alive up $ku down $kd copy $kc copy+fsync $kf MB/s"
  echo "rep $rep: S3 protocol: 1 MB PUT $s3u1 GET $s3d1 MB/s | 100 MB PUT $s3u100 GET $s3d100 MB/s"
  echo "$rep,$u1,$d1,$c1,$f1,$u100,$d100,$c100,$f100,$t100,$small,$ku,$kd,$kc,$kf,$renders,$s3u1,$s3d1,$s3u100,$s3d100,$avifs" >> "$csv"
done
peak="$(awk '/VmHWM/ {print $2}' "/proc/$proxy/status")"
echo "proxy peak RSS: $((peak / 1024)) MiB"
python3 - "$csv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
col = lambda k: [float(r[k]) for r in rows]
def ratio(name, a, b):
    r = [x / y for x, y in zip(col(a), col(b))]
    print(f"RATIO {name} {statistics.median(r):.2f} (min {min(r):.2f}, max {max(r):.2f}, n={len(r)})")
print(f"small-object uploads/s: median {statistics.median(col('small_uploads_per_s')):.0f}")
t = col('transforms_per_s')
print(f"transforms/s (2000x1500 JPEG -> 500 px WebP, uncached): median {statistics.median(t):.1f} (min {min(t):.1f}, max {max(t):.1f})")
t = col('avif_per_s')
print(f"transforms/s (2000x1500 JPEG -> 500 px AVIF, uncached): median {statistics.median(t):.1f} (min {min(t):.1f}, max {max(t):.1f})")
ratio("storage-upload-1MB (MB/s / cp)", "up_1mb", "cp_1mb")
ratio("storage-download-1MB (MB/s / cp)", "down_1mb", "cp_1mb")
ratio("storage-upload-100MB (MB/s / cp)", "up_100mb", "cp_100mb")
ratio("storage-download-100MB (MB/s / cp)", "down_100mb", "cp_100mb")
ratio("storage-tus-upload-100MB (MB/s / cp)", "tus_100mb", "cp_100mb")
ratio("storage-s3-put-1MB (MB/s / REST upload)", "s3_up_1mb", "up_1mb")
ratio("storage-s3-get-1MB (MB/s / REST download)", "s3_down_1mb", "down_1mb")
ratio("storage-s3-put-100MB (MB/s / REST upload)", "s3_up_100mb", "up_100mb")
ratio("storage-s3-get-100MB (MB/s / REST download)", "s3_down_100mb", "down_100mb")
ratio("storage-upload-1MB (MB/s / cp+fsync)", "up_1mb", "cp_fsync_1mb")
ratio("storage-upload-100MB (MB/s / cp+fsync)", "up_100mb", "cp_fsync_100mb")
ratio("storage-upload-1MB-keepalive (MB/s / copy)", "ka_up_1mb", "ka_cp_1mb")
ratio("storage-download-1MB-keepalive (MB/s / copy)", "ka_down_1mb", "ka_cp_1mb")
ratio("storage-upload-1MB-keepalive (MB/s / copy+fsync)", "ka_up_1mb", "ka_cp_fsync_1mb")
PY
echo "csv: $csv"

[ "${STORAGE_S3:-1}" = 1 ] || exit 0
echo
echo "S3 backend (moto's S3 server on this machine)"
s3_port="$(free_port)"
python3 -m moto.server -H 127.0.0.1 -p "$s3_port" >/dev/null 2>&1 &
s3=$!
s3url="http://127.0.0.1:$s3_port/bench-s3"
for _ in $(seq 1 100); do curl -fsS -X PUT "$s3url" >/dev/null 2>&1 && break; sleep 0.1; done
s3auth=(--aws-sigv4 "aws:amz:us-east-1:s3" --user bench:bench-secret)
kill "$proxy"
wait "$proxy" 2>/dev/null || true
export FLUXBASE_STORAGE_BACKEND=s3 FLUXBASE_STORAGE_S3_BUCKET=bench-s3 FLUXBASE_STORAGE_S3_ENDPOINT="http://127.0.0.1:$s3_port" \
  FLUXBASE_STORAGE_S3_FORCE_PATH_STYLE=true FLUXBASE_STORAGE_S3_ACCESS_KEY_ID=bench FLUXBASE_STORAGE_S3_SECRET_ACCESS_KEY=bench-secret
proxy_start

put_direct() { # put_direct FILE NAME COUNT -> MB/s of signed PUTs straight to the S3 server
  local start end i
  start="$(now)"
  for i in $(seq 1 "$3"); do
    curl -fsS -o /dev/null "${s3auth[@]}" -H 'content-type: application/octet-stream' -T "$1" "$s3url/direct/$2-$i"
  done
  end="$(now)"
  mbps $(($(stat -c %s "$1") * $3)) "$start" "$end"
}
get_direct() { # get_direct NAME SIZE COUNT -> MB/s of signed GETs straight from the S3 server
  local start end i
  start="$(now)"
  for i in $(seq 1 "$3"); do
    curl -fsS -o "$files/cp/down-$i" "${s3auth[@]}" "$s3url/direct/$1-$i"
  done
  end="$(now)"
  rm -f "$files"/cp/down-*
  mbps $(($2 * $3)) "$start" "$end"
}

csv="tests/bench/results/storage-s3-$(date -u +%Y%m%dT%H%M%SZ).csv"
echo "rep,up_1mb,down_1mb,put_1mb,get_1mb,up_100mb,down_100mb,put_100mb,get_100mb" > "$csv"
for rep in $(seq 1 "$REPS"); do
  p1="$(put_direct "$files/1mb.bin" one "$COUNT_1MB")"
  u1="$(upload_http "$files/1mb.bin" s3one "$COUNT_1MB")"
  d1="$(download_http s3one $((1 << 20)) "$COUNT_1MB")"
  g1="$(get_direct one $((1 << 20)) "$COUNT_1MB")"
  p100="$(put_direct "$files/100mb.bin" hundred 1)"
  u100="$(upload_http "$files/100mb.bin" s3hundred 1)"
  d100="$(download_http s3hundred $((100 << 20)) 1)"
  g100="$(get_direct hundred $((100 << 20)) 1)"
  echo "rep $rep: 1 MB up $u1 down $d1, direct PUT $p1 GET $g1 MB/s | 100 MB up $u100 down $d100, direct PUT $p100 GET $g100 MB/s"
  echo "$rep,$u1,$d1,$p1,$g1,$u100,$d100,$p100,$g100" >> "$csv"
done
peak="$(awk '/VmHWM/ {print $2}' "/proc/$proxy/status")"
echo "S3 proxy peak RSS: $((peak / 1024)) MiB"
python3 - "$csv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
col = lambda k: [float(r[k]) for r in rows]
def ratio(name, a, b):
    r = [x / y for x, y in zip(col(a), col(b))]
    print(f"RATIO {name} {statistics.median(r):.2f} (min {min(r):.2f}, max {max(r):.2f}, n={len(r)})")
for k in ("up_1mb", "down_1mb", "put_1mb", "get_1mb", "up_100mb", "down_100mb", "put_100mb", "get_100mb"):
    print(f"{k}: median {statistics.median(col(k)):.1f} MB/s")
ratio("storage-s3-upload-1MB (MB/s / direct PUT)", "up_1mb", "put_1mb")
ratio("storage-s3-download-1MB (MB/s / direct GET)", "down_1mb", "get_1mb")
ratio("storage-s3-upload-100MB (MB/s / direct PUT)", "up_100mb", "put_100mb")
ratio("storage-s3-download-100MB (MB/s / direct GET)", "down_100mb", "get_100mb")
PY
echo "csv: $csv"
