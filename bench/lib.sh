# Shared by bench/run.sh and bench/hub.sh: sourced, not run.

# install_missing CMD:PACKAGE... installs from apt the packages whose
# command is not on PATH.
install_missing() {
	local missing=() tool sudo=""
	for tool in "$@"; do
		command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
	done
	((${#missing[@]})) || return 0
	echo "installing ${missing[*]} from apt" >&2
	[ "$(id -u)" = 0 ] || sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
}

# need_two_cpus NAME WHAT exits unless the machine has the 2 CPUs the
# benchmarks pin the server (CPU 1) and the load (CPU 0) to.
need_two_cpus() {
	if [ "$(nproc)" -lt 2 ]; then
		echo "$1: needs 2 CPUs ($2); this machine has $(nproc)" >&2
		exit 1
	fi
}
