from kubetune.launch import accelerate_command


def test_single_gpu_launch_line() -> None:
    cmd = accelerate_command("/etc/kubetune/spec.yaml", gpus=1)
    assert cmd[:2] == ["accelerate", "launch"]
    assert cmd[-3:] == ["-m", "kubetune.train", "/etc/kubetune/spec.yaml"]
    assert cmd[cmd.index("--num_processes") + 1] == "1"
    assert "--multi_gpu" not in cmd and "--cpu" not in cmd and "--machine_rank" not in cmd


def test_cpu_launch_line() -> None:
    cmd = accelerate_command("spec.yaml", gpus=0)
    assert "--cpu" in cmd
    assert cmd[cmd.index("--num_processes") + 1] == "1"


def test_multi_node_launch_line_uses_kubernetes_env_expansion() -> None:
    cmd = accelerate_command("spec.yaml", gpus=4, nodes=2)
    assert cmd[cmd.index("--num_processes") + 1] == "8"
    assert cmd[cmd.index("--num_machines") + 1] == "2"
    assert cmd[cmd.index("--machine_rank") + 1] == "$(KUBETUNE_MACHINE_RANK)"
    assert cmd[cmd.index("--main_process_ip") + 1] == "$(KUBETUNE_MAIN_HOST)"
    assert "--multi_gpu" in cmd
