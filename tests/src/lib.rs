//! Simulated Kubernetes node for weir tests: pods as netns + veth + cgroup.
