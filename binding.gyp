{
  "targets": [
    {
      "target_name": "tcpproxy",
      "conditions": [
        ["OS!='linux'", {"type": "none", "actions": [{"action_name": "linux_only", "inputs": [], "outputs": ["linux_only"], "action": ["sh", "-c", "echo 'tcpproxy: the native addon builds on Linux only' >&2; exit 1"]}]}]
      ],
      "sources": [
        "native/access.cc",
        "native/addon.cc",
        "native/address.cc",
        "native/errors.cc",
        "native/fd.cc",
        "native/limits.cc",
        "native/listen.cc",
        "native/notify.cc",
        "native/process.cc",
        "native/proxy.cc",
        "native/pump.cc",
        "native/reactor.cc",
        "native/sandbox.cc",
        "native/serve.cc",
        "native/spawn.cc",
        "native/syslog.cc",
        "native/users.cc"
      ],
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"
      ],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "_GNU_SOURCE"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-fvisibility=hidden", "-fstack-protector-strong"]
    }
  ]
}
