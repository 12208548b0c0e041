# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_exoip_global_optspecs
    string join \n W/watchdog A/associate D/dissociate n/validate c/config= address= P/priority= l/bind= p/peer= G/peer-group= i/instance-id= r/dead-ratio= t/interval= provider= api-key= api-secret= api-secret-file= api-secret-credential= api-endpoint= zone= metadata-url= api-timeout= os-cloud= openstack-mode= port= vip-port= azure-mode= azure-subscription= azure-resource-group= azure-api-version= azure-client-secret-file= azure-client-id= arm-endpoint= azure-public-ip= azure-ip-config= azure-peer-tag= probe-port= probe-path= interface= auth-key-file= auth-key-credential= group= max-clock-skew= legacy-protocol legacy-nic-id= reconcile-interval= isolation-release-after= peer-refresh= no-alias alias dry-run track-script= track-process= track-tcp= track-http= track-interval= track-timeout= track-fall= track-rise= track-weight= notify= notify-master= notify-backup= notify-fault= hook-shell hook-timeout= state-dir= status-socket= metrics-listen= O/log-stdout v/verbose log-format= h/help V/version
end

function __fish_exoip_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_exoip_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_exoip_using_subcommand
    set -l cmd (__fish_exoip_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c exoip -n "__fish_exoip_needs_command" -s c -l config -d 'Read the settings from this TOML file (see exoip.toml(5)); flags and the environment win over it' -r
complete -c exoip -n "__fish_exoip_needs_command" -l address -d 'The elastic IP to watch (repeatable for several IPs). Legacy: -xi' -r
complete -c exoip -n "__fish_exoip_needs_command" -s P -l priority -d 'Priority, 1..=255; the lowest value wins' -r
complete -c exoip -n "__fish_exoip_needs_command" -s l -l bind -d 'Heartbeat bind address: `:PORT`, `IP`, `IP:PORT` or `[IPv6]:PORT`' -r
complete -c exoip -n "__fish_exoip_needs_command" -s p -l peer -d 'Peers, `IP` or `IP:PORT` (repeatable, comma separated)' -r
complete -c exoip -n "__fish_exoip_needs_command" -s G -l peer-group -d 'Discover peers as the running members of this security group (name or id)' -r
complete -c exoip -n "__fish_exoip_needs_command" -s i -l instance-id -d 'Own instance id; default: from the metadata service' -r
complete -c exoip -n "__fish_exoip_needs_command" -s r -l dead-ratio -d 'A peer is dead after this many intervals without a valid heartbeat (>= 2)' -r
complete -c exoip -n "__fish_exoip_needs_command" -s t -l interval -d 'Heartbeat interval: seconds (`1`, `0.1`) or with a unit (`100ms`, `2s`)' -r
complete -c exoip -n "__fish_exoip_needs_command" -l provider -d 'The cloud: exoscale (default), openstack or azure' -r -f -a "exoscale\t''
openstack\t''
azure\t''"
complete -c exoip -n "__fish_exoip_needs_command" -l api-key -d 'API key. Legacy: -xk. Also read from EXOSCALE_API_KEY' -r
complete -c exoip -n "__fish_exoip_needs_command" -l api-secret -d 'API secret (visible in `ps`: prefer --api-secret-file or the environment). Legacy: -xs. Also read from EXOSCALE_API_SECRET' -r
complete -c exoip -n "__fish_exoip_needs_command" -l api-secret-file -d 'Read the API secret from this file (first line)' -r
complete -c exoip -n "__fish_exoip_needs_command" -l api-secret-credential -d 'Read the API secret from systemd credential NAME ($CREDENTIALS_DIRECTORY/NAME, from LoadCredential=NAME:PATH)' -r
complete -c exoip -n "__fish_exoip_needs_command" -l api-endpoint -d 'API v2 endpoint. Default: https://api-{zone}.exoscale.com/v2. Legacy: -xe' -r
complete -c exoip -n "__fish_exoip_needs_command" -l zone -d 'Zone of the instances and the elastic IP' -r
complete -c exoip -n "__fish_exoip_needs_command" -l metadata-url -d 'Base URL of the instance metadata service' -r
complete -c exoip -n "__fish_exoip_needs_command" -l api-timeout -d 'Per-request timeout of API calls' -r
complete -c exoip -n "__fish_exoip_needs_command" -l os-cloud -d 'OpenStack: the cloud of clouds.yaml to use (otherwise the OS_* variables of an openrc)' -r
complete -c exoip -n "__fish_exoip_needs_command" -l openstack-mode -d 'OpenStack: floating-ip (move a floating IP between ports) or vip (a private VIP in the ports\' allowed address pairs, held on the NIC and announced with gratuitous ARP)' -r -f -a "floating-ip\t''
vip\t''"
complete -c exoip -n "__fish_exoip_needs_command" -l port -d 'OpenStack: own Neutron port id, when the server has several ports' -r
complete -c exoip -n "__fish_exoip_needs_command" -l vip-port -d 'OpenStack vip mode: the port holding the VIP as a fixed IP (and its floating IP, if any)' -r
complete -c exoip -n "__fish_exoip_needs_command" -l azure-mode -d 'Azure: public-ip (move a public IP between NICs), secondary-ip (move a secondary private ipConfiguration, held on the NIC and announced with gratuitous ARP) or lb-probe (a load balancer with Floating IP: only the holder answers its health probe; no ARM call)' -r -f -a "public-ip\t''
secondary-ip\t''
lb-probe\t''"
complete -c exoip -n "__fish_exoip_needs_command" -l azure-subscription -d 'Azure: subscription id. Default: AZURE_SUBSCRIPTION_ID, else the instance metadata' -r
complete -c exoip -n "__fish_exoip_needs_command" -l azure-resource-group -d 'Azure: resource group of the NICs and public IPs. Default: the VM\'s, from the instance metadata' -r
complete -c exoip -n "__fish_exoip_needs_command" -l azure-api-version -d 'Azure: Microsoft.Network api-version (default: a long-deployed one, 2024-05-01)' -r
complete -c exoip -n "__fish_exoip_needs_command" -l azure-client-secret-file -d 'Azure: read the service principal\'s client secret from this file (first line), with AZURE_TENANT_ID and AZURE_CLIENT_ID from the environment' -r
complete -c exoip -n "__fish_exoip_needs_command" -l azure-client-id -d 'Azure: client id of the service principal, or of the user-assigned managed identity to use (instead of AZURE_CLIENT_ID)' -r
complete -c exoip -n "__fish_exoip_needs_command" -l arm-endpoint -d 'Azure: the Resource Manager endpoint (other clouds, emulators). Default: per ARM_ENVIRONMENT, https://management.azure.com' -r
complete -c exoip -n "__fish_exoip_needs_command" -l azure-public-ip -d 'Azure public-ip mode: the public IP resource\'s name. Default: found by its address' -r
complete -c exoip -n "__fish_exoip_needs_command" -l azure-ip-config -d 'Azure: the ipConfiguration to put the public IP on (default: the primary one), or in secondary-ip mode the name of the secondary ipConfiguration (default: as found)' -r
complete -c exoip -n "__fish_exoip_needs_command" -l azure-peer-tag -d 'Azure: peers are the VMs whose NICs carry this tag (instead of -p or -G, where -G names a network security group)' -r
complete -c exoip -n "__fish_exoip_needs_command" -l probe-port -d 'Azure lb-probe mode: the TCP port of the load balancer\'s health probe, answered only while this node holds the address' -r
complete -c exoip -n "__fish_exoip_needs_command" -l probe-path -d 'Azure lb-probe mode: answer HTTP probes: 200 on GET of this path, 404 on others. Default: a TCP probe (accept and close)' -r
complete -c exoip -n "__fish_exoip_needs_command" -l interface -d 'Network interface that holds the address in NIC modes (OpenStack vip, Azure secondary-ip). Default: the interface of the default route' -r
complete -c exoip -n "__fish_exoip_needs_command" -l auth-key-file -d 'Heartbeat key file (at least 16 bytes). Default on Exoscale: derived from the API secret, so peers sharing an API key authenticate each other with no extra configuration. Required on OpenStack and Azure (or EXOIP_AUTH_KEY)' -r
complete -c exoip -n "__fish_exoip_needs_command" -l auth-key-credential -d 'Read the heartbeat key from systemd credential NAME ($CREDENTIALS_DIRECTORY/NAME)' -r
complete -c exoip -n "__fish_exoip_needs_command" -l group -d 'Heartbeat group name: datagrams of other groups are ignored' -r
complete -c exoip -n "__fish_exoip_needs_command" -l max-clock-skew -d 'Reject heartbeats whose timestamp is further than this from the local clock (0: off)' -r
complete -c exoip -n "__fish_exoip_needs_command" -l legacy-nic-id -d 'With --legacy-protocol: the UUID old peers pass back to the API to fence this node (theirs is the default NIC\'s id). Default: the instance id' -r
complete -c exoip -n "__fish_exoip_needs_command" -l reconcile-interval -d 'Compare the API, our belief and the alias this often' -r
complete -c exoip -n "__fish_exoip_needs_command" -l isolation-release-after -d 'Self-fencing: with peers known but none heard and no API answer for this long, drop the address locally (default: 3 dead periods; 0: never)' -r
complete -c exoip -n "__fish_exoip_needs_command" -l peer-refresh -d 'Re-read the peer group this often' -r
complete -c exoip -n "__fish_exoip_needs_command" -l track-script -d 'Track a command: exit status 0 is healthy (run without a shell; repeatable)' -r
complete -c exoip -n "__fish_exoip_needs_command" -l track-process -d 'Track a process by name, like `killall -0 NAME` (repeatable)' -r
complete -c exoip -n "__fish_exoip_needs_command" -l track-tcp -d 'Track a TCP port: healthy when a connection succeeds (repeatable)' -r
complete -c exoip -n "__fish_exoip_needs_command" -l track-http -d 'Track an HTTP URL: healthy on a 2xx answer (repeatable)' -r
complete -c exoip -n "__fish_exoip_needs_command" -l track-interval -d 'How often each check runs' -r
complete -c exoip -n "__fish_exoip_needs_command" -l track-timeout -d 'How long a check may take before it counts as failed' -r
complete -c exoip -n "__fish_exoip_needs_command" -l track-fall -d 'Consecutive failures before a check is down' -r
complete -c exoip -n "__fish_exoip_needs_command" -l track-rise -d 'Consecutive successes before a check is up again' -r
complete -c exoip -n "__fish_exoip_needs_command" -l track-weight -d 'A failing check adds N to the priority value instead of putting the node in FAULT' -r
complete -c exoip -n "__fish_exoip_needs_command" -l notify -d 'Run on every state change and re-assert (environment: EXOIP_STATE, EXOIP_ADDRESS, ...)' -r
complete -c exoip -n "__fish_exoip_needs_command" -l notify-master -d 'Run on becoming master' -r
complete -c exoip -n "__fish_exoip_needs_command" -l notify-backup -d 'Run on becoming backup' -r
complete -c exoip -n "__fish_exoip_needs_command" -l notify-fault -d 'Run on entering FAULT' -r
complete -c exoip -n "__fish_exoip_needs_command" -l hook-timeout -d 'Kill a hook that runs longer than this' -r
complete -c exoip -n "__fish_exoip_needs_command" -l state-dir -d 'Where state that must survive a restart lives (the heartbeat incarnation)' -r
complete -c exoip -n "__fish_exoip_needs_command" -l status-socket -d 'Status and control socket ("none" to disable)' -r
complete -c exoip -n "__fish_exoip_needs_command" -l metrics-listen -d 'Serve Prometheus metrics on this address (e.g. 127.0.0.1:9712); off by default' -r
complete -c exoip -n "__fish_exoip_needs_command" -l log-format -d 'Log format: text or json (journald is used when started by systemd)' -r -f -a "text\t''
json\t''"
complete -c exoip -n "__fish_exoip_needs_command" -s W -l watchdog -d 'Watchdog mode: heartbeat with peers and keep the IP on the best healthy node'
complete -c exoip -n "__fish_exoip_needs_command" -s A -l associate -d 'Associate the IP with this instance and exit'
complete -c exoip -n "__fish_exoip_needs_command" -s D -l dissociate -d 'Dissociate the IP from this instance and exit'
complete -c exoip -n "__fish_exoip_needs_command" -s n -l validate -d 'Validate the configuration, print it (secrets redacted) and exit'
complete -c exoip -n "__fish_exoip_needs_command" -l legacy-protocol -d 'Also speak the old Go exoip\'s heartbeat (unauthenticated; IPv4, Exoscale), so a cluster can be upgraded node by node. Remove it once no old agent is left'
complete -c exoip -n "__fish_exoip_needs_command" -l no-alias -d 'Do not configure the address locally (it is configured elsewhere; Azure lb-probe: leave the frontend IP on lo to the system configuration, still answer the probe)'
complete -c exoip -n "__fish_exoip_needs_command" -l alias -d 'Also put the address on a loopback alias where the cloud NATs it and none is needed (OpenStack floating-ip, Azure public-ip)'
complete -c exoip -n "__fish_exoip_needs_command" -l dry-run -d 'With -A/-D: say what would be done, change nothing'
complete -c exoip -n "__fish_exoip_needs_command" -l hook-shell -d 'Run hooks through /bin/sh -c (default: split into words, no shell)'
complete -c exoip -n "__fish_exoip_needs_command" -s O -l log-stdout -d 'Log to standard output (the default; kept for the Go exoip\'s command lines)'
complete -c exoip -n "__fish_exoip_needs_command" -s v -l verbose -d 'Verbose logging'
complete -c exoip -n "__fish_exoip_needs_command" -s h -l help -d 'Print help'
complete -c exoip -n "__fish_exoip_needs_command" -s V -l version -d 'Print version'
complete -c exoip -n "__fish_exoip_needs_command" -f -a "sim" -d 'Run the simulated cloud (API v2 + metadata service) for tests and demos'
complete -c exoip -n "__fish_exoip_needs_command" -f -a "demo" -d 'Three hosts in network namespaces, the simulated cloud, a kill and the takeover timeline (root)'
complete -c exoip -n "__fish_exoip_needs_command" -f -a "status" -d 'Show what the running agent knows: states and why, priorities, API holders, peers, checks'
complete -c exoip -n "__fish_exoip_needs_command" -f -a "release" -d 'Hand the addresses over now and stay out of the election until `exoip resume`'
complete -c exoip -n "__fish_exoip_needs_command" -f -a "resume" -d 'Undo `release` or `promote`'
complete -c exoip -n "__fish_exoip_needs_command" -f -a "promote" -d 'Take the addresses now (priority value 1) until `exoip resume`'
complete -c exoip -n "__fish_exoip_needs_command" -f -a "check" -d 'Preflight: check configuration, credentials, the IP, the alias and every peer (same flags as -W)'
complete -c exoip -n "__fish_exoip_needs_command" -f -a "completions" -d 'Print a shell completion script (bash, zsh or fish) to standard output'
complete -c exoip -n "__fish_exoip_using_subcommand sim" -l provider -d 'The cloud to simulate (the EXOIP_PROVIDER environment variable is not read here)' -r -f -a "exoscale\t'Exoscale API v2'
openstack\t'OpenStack Keystone v3 + Neutron v2.0'
azure\t'Azure Resource Manager (Microsoft.Network) + Entra ID tokens + IMDS'"
complete -c exoip -n "__fish_exoip_using_subcommand sim" -l seed -d 'Initial state (JSON; see --example-seed): Exoscale: zone, API keys, security groups, instances, elastic IPs; OpenStack: region, users, networks, ports, floating IPs…; Azure: tenant, subscription, service principals, VMs with their NICs, public IPs…' -r -F
complete -c exoip -n "__fish_exoip_using_subcommand sim" -l listen -d 'API listener (the control API is on it too, under /_sim/)' -r
complete -c exoip -n "__fish_exoip_using_subcommand sim" -l metadata-listen -d 'Metadata stub listener, IMDS on Azure (instance identified by the request\'s source address)' -r
complete -c exoip -n "__fish_exoip_using_subcommand sim" -l timeline -d 'Append every holder change to this file as a JSON line (truncated at start)' -r -F
complete -c exoip -n "__fish_exoip_using_subcommand sim" -l faults -d 'Initial faults as JSON (the format of PUT /_sim/faults); the flags below override it' -r -F
complete -c exoip -n "__fish_exoip_using_subcommand sim" -l op-delay -d 'Exoscale: how long operations stay pending before their change applies; OpenStack: extra latency of Neutron mutations (they apply when it is over); Azure: how long long-running operations stay InProgress before their change applies. E.g. 0ms, 200ms' -r
complete -c exoip -n "__fish_exoip_using_subcommand sim" -l latency -d 'Delay added to every API answer, e.g. 50ms' -r
complete -c exoip -n "__fish_exoip_using_subcommand sim" -l noop-failure -d 'Re-attaching a holder or detaching a non-holder fails with this operation reason (e.g. conflict) instead of succeeding as a no-op (Exoscale only)' -r
complete -c exoip -n "__fish_exoip_using_subcommand sim" -l op-immediate -d 'Answer mutations with an operation already in state success (Exoscale; Azure: Succeeded). Not for OpenStack'
complete -c exoip -n "__fish_exoip_using_subcommand sim" -l route-holders -d 'Make traffic to each floating address reach its holders (run it in a router network namespace): Exoscale: `ip route` to the holders\' public IPs; OpenStack: NAT of each floating IP to its port\'s fixed IP in the nftables table `ip exoip_sim`; Azure: `ip route` of each public IP to its holder VM\'s private IP'
complete -c exoip -n "__fish_exoip_using_subcommand sim" -l example-seed -d 'Print an example seed file and exit'
complete -c exoip -n "__fish_exoip_using_subcommand sim" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c exoip -n "__fish_exoip_using_subcommand demo" -l provider -d 'The simulated cloud: exoscale, openstack or azure' -r -f -a "exoscale\t''
openstack\t''
azure\t''"
complete -c exoip -n "__fish_exoip_using_subcommand demo" -l openstack-mode -d 'OpenStack: floating-ip (default) or vip (allowed address pairs + gratuitous ARP)' -r -f -a "floating-ip\t''
vip\t''"
complete -c exoip -n "__fish_exoip_using_subcommand demo" -l azure-mode -d 'Azure: public-ip (default), secondary-ip (two PUTs + gratuitous ARP) or lb-probe (a load balancer emulated in the lab follows the health probe)' -r -f -a "public-ip\t''
secondary-ip\t''
lb-probe\t''"
complete -c exoip -n "__fish_exoip_using_subcommand demo" -l hosts -d 'Number of hosts (priorities 10, 20, 30...: lb1 is the preferred holder)' -r
complete -c exoip -n "__fish_exoip_using_subcommand demo" -s t -l interval -d 'Heartbeat interval' -r
complete -c exoip -n "__fish_exoip_using_subcommand demo" -s r -l dead-ratio -d 'A peer is dead after this many intervals without a heartbeat' -r
complete -c exoip -n "__fish_exoip_using_subcommand demo" -l op-delay -d 'Latency of every attach/detach in the simulated cloud' -r
complete -c exoip -n "__fish_exoip_using_subcommand demo" -l exoip -d 'exoip binary to run in the namespaces (default: this one)' -r -F
complete -c exoip -n "__fish_exoip_using_subcommand demo" -l agent-arg -d 'Extra arguments for every agent (repeatable)' -r
complete -c exoip -n "__fish_exoip_using_subcommand demo" -l ipv6 -d 'IPv6 end to end (--provider exoscale only): the elastic IP is 2001:db8:ee::1, and heartbeats, the route and the client\'s requests go over IPv6'
complete -c exoip -n "__fish_exoip_using_subcommand demo" -l keep -d 'Keep the lab\'s directory (logs, timeline) and print where it is'
complete -c exoip -n "__fish_exoip_using_subcommand demo" -s v -l verbose -d 'Print the lab\'s construction and the logs\' tails at the end'
complete -c exoip -n "__fish_exoip_using_subcommand demo" -s h -l help -d 'Print help'
complete -c exoip -n "__fish_exoip_using_subcommand status" -l socket -d 'The agent\'s status socket' -r -F
complete -c exoip -n "__fish_exoip_using_subcommand status" -l json -d 'Print the status document as JSON instead of the report'
complete -c exoip -n "__fish_exoip_using_subcommand status" -s h -l help -d 'Print help'
complete -c exoip -n "__fish_exoip_using_subcommand release" -l socket -d 'The agent\'s status socket' -r -F
complete -c exoip -n "__fish_exoip_using_subcommand release" -s h -l help -d 'Print help'
complete -c exoip -n "__fish_exoip_using_subcommand resume" -l socket -d 'The agent\'s status socket' -r -F
complete -c exoip -n "__fish_exoip_using_subcommand resume" -s h -l help -d 'Print help'
complete -c exoip -n "__fish_exoip_using_subcommand promote" -l socket -d 'The agent\'s status socket' -r -F
complete -c exoip -n "__fish_exoip_using_subcommand promote" -s h -l help -d 'Print help'
complete -c exoip -n "__fish_exoip_using_subcommand check" -s c -l config -d 'Read the settings from this TOML file (see exoip.toml(5)); flags and the environment win over it' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l address -d 'The elastic IP to watch (repeatable for several IPs). Legacy: -xi' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -s P -l priority -d 'Priority, 1..=255; the lowest value wins' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -s l -l bind -d 'Heartbeat bind address: `:PORT`, `IP`, `IP:PORT` or `[IPv6]:PORT`' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -s p -l peer -d 'Peers, `IP` or `IP:PORT` (repeatable, comma separated)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -s G -l peer-group -d 'Discover peers as the running members of this security group (name or id)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -s i -l instance-id -d 'Own instance id; default: from the metadata service' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -s r -l dead-ratio -d 'A peer is dead after this many intervals without a valid heartbeat (>= 2)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -s t -l interval -d 'Heartbeat interval: seconds (`1`, `0.1`) or with a unit (`100ms`, `2s`)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l provider -d 'The cloud: exoscale (default), openstack or azure' -r -f -a "exoscale\t''
openstack\t''
azure\t''"
complete -c exoip -n "__fish_exoip_using_subcommand check" -l api-key -d 'API key. Legacy: -xk. Also read from EXOSCALE_API_KEY' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l api-secret -d 'API secret (visible in `ps`: prefer --api-secret-file or the environment). Legacy: -xs. Also read from EXOSCALE_API_SECRET' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l api-secret-file -d 'Read the API secret from this file (first line)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l api-secret-credential -d 'Read the API secret from systemd credential NAME ($CREDENTIALS_DIRECTORY/NAME, from LoadCredential=NAME:PATH)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l api-endpoint -d 'API v2 endpoint. Default: https://api-{zone}.exoscale.com/v2. Legacy: -xe' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l zone -d 'Zone of the instances and the elastic IP' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l metadata-url -d 'Base URL of the instance metadata service' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l api-timeout -d 'Per-request timeout of API calls' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l os-cloud -d 'OpenStack: the cloud of clouds.yaml to use (otherwise the OS_* variables of an openrc)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l openstack-mode -d 'OpenStack: floating-ip (move a floating IP between ports) or vip (a private VIP in the ports\' allowed address pairs, held on the NIC and announced with gratuitous ARP)' -r -f -a "floating-ip\t''
vip\t''"
complete -c exoip -n "__fish_exoip_using_subcommand check" -l port -d 'OpenStack: own Neutron port id, when the server has several ports' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l vip-port -d 'OpenStack vip mode: the port holding the VIP as a fixed IP (and its floating IP, if any)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l azure-mode -d 'Azure: public-ip (move a public IP between NICs), secondary-ip (move a secondary private ipConfiguration, held on the NIC and announced with gratuitous ARP) or lb-probe (a load balancer with Floating IP: only the holder answers its health probe; no ARM call)' -r -f -a "public-ip\t''
secondary-ip\t''
lb-probe\t''"
complete -c exoip -n "__fish_exoip_using_subcommand check" -l azure-subscription -d 'Azure: subscription id. Default: AZURE_SUBSCRIPTION_ID, else the instance metadata' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l azure-resource-group -d 'Azure: resource group of the NICs and public IPs. Default: the VM\'s, from the instance metadata' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l azure-api-version -d 'Azure: Microsoft.Network api-version (default: a long-deployed one, 2024-05-01)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l azure-client-secret-file -d 'Azure: read the service principal\'s client secret from this file (first line), with AZURE_TENANT_ID and AZURE_CLIENT_ID from the environment' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l azure-client-id -d 'Azure: client id of the service principal, or of the user-assigned managed identity to use (instead of AZURE_CLIENT_ID)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l arm-endpoint -d 'Azure: the Resource Manager endpoint (other clouds, emulators). Default: per ARM_ENVIRONMENT, https://management.azure.com' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l azure-public-ip -d 'Azure public-ip mode: the public IP resource\'s name. Default: found by its address' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l azure-ip-config -d 'Azure: the ipConfiguration to put the public IP on (default: the primary one), or in secondary-ip mode the name of the secondary ipConfiguration (default: as found)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l azure-peer-tag -d 'Azure: peers are the VMs whose NICs carry this tag (instead of -p or -G, where -G names a network security group)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l probe-port -d 'Azure lb-probe mode: the TCP port of the load balancer\'s health probe, answered only while this node holds the address' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l probe-path -d 'Azure lb-probe mode: answer HTTP probes: 200 on GET of this path, 404 on others. Default: a TCP probe (accept and close)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l interface -d 'Network interface that holds the address in NIC modes (OpenStack vip, Azure secondary-ip). Default: the interface of the default route' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l auth-key-file -d 'Heartbeat key file (at least 16 bytes). Default on Exoscale: derived from the API secret, so peers sharing an API key authenticate each other with no extra configuration. Required on OpenStack and Azure (or EXOIP_AUTH_KEY)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l auth-key-credential -d 'Read the heartbeat key from systemd credential NAME ($CREDENTIALS_DIRECTORY/NAME)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l group -d 'Heartbeat group name: datagrams of other groups are ignored' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l max-clock-skew -d 'Reject heartbeats whose timestamp is further than this from the local clock (0: off)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l legacy-nic-id -d 'With --legacy-protocol: the UUID old peers pass back to the API to fence this node (theirs is the default NIC\'s id). Default: the instance id' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l reconcile-interval -d 'Compare the API, our belief and the alias this often' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l isolation-release-after -d 'Self-fencing: with peers known but none heard and no API answer for this long, drop the address locally (default: 3 dead periods; 0: never)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l peer-refresh -d 'Re-read the peer group this often' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l track-script -d 'Track a command: exit status 0 is healthy (run without a shell; repeatable)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l track-process -d 'Track a process by name, like `killall -0 NAME` (repeatable)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l track-tcp -d 'Track a TCP port: healthy when a connection succeeds (repeatable)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l track-http -d 'Track an HTTP URL: healthy on a 2xx answer (repeatable)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l track-interval -d 'How often each check runs' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l track-timeout -d 'How long a check may take before it counts as failed' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l track-fall -d 'Consecutive failures before a check is down' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l track-rise -d 'Consecutive successes before a check is up again' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l track-weight -d 'A failing check adds N to the priority value instead of putting the node in FAULT' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l notify -d 'Run on every state change and re-assert (environment: EXOIP_STATE, EXOIP_ADDRESS, ...)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l notify-master -d 'Run on becoming master' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l notify-backup -d 'Run on becoming backup' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l notify-fault -d 'Run on entering FAULT' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l hook-timeout -d 'Kill a hook that runs longer than this' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l state-dir -d 'Where state that must survive a restart lives (the heartbeat incarnation)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l status-socket -d 'Status and control socket ("none" to disable)' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l metrics-listen -d 'Serve Prometheus metrics on this address (e.g. 127.0.0.1:9712); off by default' -r
complete -c exoip -n "__fish_exoip_using_subcommand check" -l log-format -d 'Log format: text or json (journald is used when started by systemd)' -r -f -a "text\t''
json\t''"
complete -c exoip -n "__fish_exoip_using_subcommand check" -s W -l watchdog -d 'Watchdog mode: heartbeat with peers and keep the IP on the best healthy node'
complete -c exoip -n "__fish_exoip_using_subcommand check" -s A -l associate -d 'Associate the IP with this instance and exit'
complete -c exoip -n "__fish_exoip_using_subcommand check" -s D -l dissociate -d 'Dissociate the IP from this instance and exit'
complete -c exoip -n "__fish_exoip_using_subcommand check" -s n -l validate -d 'Validate the configuration, print it (secrets redacted) and exit'
complete -c exoip -n "__fish_exoip_using_subcommand check" -l legacy-protocol -d 'Also speak the old Go exoip\'s heartbeat (unauthenticated; IPv4, Exoscale), so a cluster can be upgraded node by node. Remove it once no old agent is left'
complete -c exoip -n "__fish_exoip_using_subcommand check" -l no-alias -d 'Do not configure the address locally (it is configured elsewhere; Azure lb-probe: leave the frontend IP on lo to the system configuration, still answer the probe)'
complete -c exoip -n "__fish_exoip_using_subcommand check" -l alias -d 'Also put the address on a loopback alias where the cloud NATs it and none is needed (OpenStack floating-ip, Azure public-ip)'
complete -c exoip -n "__fish_exoip_using_subcommand check" -l dry-run -d 'With -A/-D: say what would be done, change nothing'
complete -c exoip -n "__fish_exoip_using_subcommand check" -l hook-shell -d 'Run hooks through /bin/sh -c (default: split into words, no shell)'
complete -c exoip -n "__fish_exoip_using_subcommand check" -s O -l log-stdout -d 'Log to standard output (the default; kept for the Go exoip\'s command lines)'
complete -c exoip -n "__fish_exoip_using_subcommand check" -s v -l verbose -d 'Verbose logging'
complete -c exoip -n "__fish_exoip_using_subcommand check" -s h -l help -d 'Print help'
complete -c exoip -n "__fish_exoip_using_subcommand completions" -s h -l help -d 'Print help'
