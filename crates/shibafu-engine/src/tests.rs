//! Lifecycle tests against the fakes: what a client sees.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard_stubs::models::*;
use futures::StreamExt;
use shibafu_api::{
    ApiError, AttachOptions, ContainerBackend, Filters, SystemBackend, VolumeBackend, WaitCondition,
};

use crate::fakes::{FakeImages, FakeRootfs, FakeRuntime};
use crate::ports::Supervisor as _;
use crate::{Engine, EngineConfig};

struct Env {
    _dir: tempfile::TempDir,
    cfg: EngineConfig,
    rootfs: Arc<FakeRootfs>,
    rt: Arc<FakeRuntime>,
    e: Arc<Engine>,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EngineConfig {
        data_root: dir.path().join("data"),
        exec_root: dir.path().join("run"),
        exe: "/bin/false".into(),
        default_log_max_size: None,
        default_log_max_file: 1,
        init_path: None,
    };
    let rootfs = Arc::new(FakeRootfs::default());
    let rt = Arc::new(FakeRuntime::default());
    let e = Engine::with_parts(
        cfg.clone(),
        Arc::new(FakeImages),
        rootfs.clone(),
        rt.clone(),
    )
    .await
    .unwrap();
    Env {
        _dir: dir,
        cfg,
        rootfs,
        rt,
        e,
    }
}

impl Env {
    /// A new engine over the same state and runtime: a daemon restart.
    async fn restart_daemon(self) -> Env {
        let Env {
            _dir,
            cfg,
            rootfs,
            rt,
            e,
        } = self;
        e.shutdown().await;
        // The old engine's aborted tasks release it (and its database)
        // asynchronously; a new daemon process would not have to wait.
        let old = Arc::downgrade(&e);
        drop(e);
        for _ in 0..200 {
            if old.strong_count() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let e = Engine::with_parts(
            cfg.clone(),
            Arc::new(FakeImages),
            rootfs.clone(),
            rt.clone(),
        )
        .await
        .unwrap();
        Env {
            _dir,
            cfg,
            rootfs,
            rt,
            e,
        }
    }
}

fn body(cmd: &[&str]) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some("busybox".into()),
        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    }
}

fn with_hc(mut b: ContainerCreateBody, hc: HostConfig) -> ContainerCreateBody {
    b.host_config = Some(hc);
    b
}

async fn create(e: &Engine, name: &str, b: ContainerCreateBody) -> String {
    e.container_create(Some(name.into()), b).await.unwrap().id
}

async fn status(e: &Engine, id: &str) -> (String, i64) {
    let i = e.container_inspect(id, false).await.unwrap();
    let s = i.state.unwrap();
    (s.status.unwrap().to_string(), s.exit_code.unwrap())
}

async fn eventually<F: Fn() -> futures::future::BoxFuture<'static, bool>>(f: F) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached");
}

#[tokio::test]
async fn run_wait_inspect_ps() {
    let t = env().await;
    let e = &t.e;
    let id = create(e, "web", body(&["sleep", "100"])).await;
    let wait = e
        .container_wait("web", WaitCondition::NextExit)
        .await
        .unwrap();
    e.container_start("web").await.unwrap();
    assert!(matches!(
        e.container_start(&id[..12]).await,
        Err(ApiError::NotModified)
    ));
    let i = e.container_inspect("/web", false).await.unwrap();
    assert_eq!(i.name.as_deref(), Some("/web"));
    assert_eq!(
        i.image.as_deref(),
        Some(format!("sha256:bb{}", "0".repeat(62)).as_str())
    );
    assert_eq!(
        i.host_config.unwrap().log_config.unwrap().typ.as_deref(),
        Some("json-file")
    );
    assert!(i.state.as_ref().unwrap().running.unwrap());
    assert_eq!(i.graph_driver.unwrap().name, "overlay2");
    let ps = e
        .container_list(false, None, false, Filters::new())
        .await
        .unwrap();
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].names.as_ref().unwrap()[0], "/web");
    assert_eq!(ps[0].command.as_deref(), Some("sleep 100"));
    assert!(ps[0].status.as_ref().unwrap().starts_with("Up "));
    // The runtime got the merged config.
    let cfg = t.rt.configs.lock()[0].clone();
    assert_eq!(cfg.process.args, vec!["sleep", "100"]);
    assert!(cfg.process.env.contains(&format!("HOSTNAME={}", &id[..12])));
    assert_eq!(cfg.mounts[0].destination, "/etc/hostname");
    assert_eq!(cfg.cgroups_path, format!("/shibafu/{id}"));

    e.container_kill("web", None).await.unwrap();
    assert_eq!(wait.await.unwrap(), 137);
    assert_eq!(status(e, "web").await, ("exited".into(), 137));
    assert!(!t.rootfs.is_mounted_dir(&t.e.rootfs_dir(&id)));
    let ps = e
        .container_list(false, None, false, Filters::new())
        .await
        .unwrap();
    assert!(ps.is_empty());
    let ps = e
        .container_list(true, None, false, Filters::new())
        .await
        .unwrap();
    assert!(ps[0].status.as_ref().unwrap().starts_with("Exited (137)"));
    let f = Filters::from([("exited".to_string(), vec!["137".to_string()])]);
    assert_eq!(
        e.container_list(false, None, false, f).await.unwrap().len(),
        1
    );
    match e.container_kill("web", None).await {
        Err(ApiError::Conflict(m)) => assert_eq!(m, format!("Container {id} is not running")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        e.container_stop("web", None, None).await,
        Err(ApiError::NotModified)
    ));
}

#[tokio::test]
async fn create_validates_before_acting() {
    let t = env().await;
    let e = &t.e;
    let mut b = body(&["true"]);
    b.image = Some("nosuch".into());
    match e.container_create(None, b).await {
        Err(ApiError::NotFound(m)) => assert_eq!(m, "No such image: nosuch"),
        other => panic!("{other:?}"),
    }
    let id = create(e, "web", body(&["true"])).await;
    match e.container_create(Some("/web".into()), body(&["true"])).await {
        Err(ApiError::Conflict(m)) => assert_eq!(
            m,
            format!("Conflict. The container name \"/web\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")
        ),
        other => panic!("{other:?}"),
    }
    let bad = with_hc(
        body(&["true"]),
        HostConfig {
            memory: Some(1000),
            ..Default::default()
        },
    );
    assert!(matches!(
        e.container_create(Some("x1".into()), bad).await,
        Err(ApiError::InvalidArgument(_))
    ));
    let bad = with_hc(
        body(&["true"]),
        HostConfig {
            network_mode: Some("mynet".into()),
            ..Default::default()
        },
    );
    match e.container_create(Some("x2".into()), bad).await {
        // 400, not 404: the docker CLI reads a 404 from create as "no such image".
        Err(ApiError::InvalidArgument(m)) => assert_eq!(m, "network mynet not found"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        e.container_create(Some("bad name".into()), body(&["true"]))
            .await,
        Err(ApiError::InvalidArgument(_))
    ));
    // Nothing of the failed creates is left: one container dir, one record.
    let dirs: Vec<_> = std::fs::read_dir(t.cfg.data_root.join("containers"))
        .unwrap()
        .collect();
    assert_eq!(dirs.len(), 1);
    assert_eq!(
        e.container_list(true, None, false, Filters::new())
            .await
            .unwrap()
            .len(),
        1
    );
    // A random name is given when none is asked for.
    let r = e.container_create(None, body(&["true"])).await.unwrap();
    let i = e.container_inspect(&r.id, false).await.unwrap();
    assert!(crate::names::valid_name(
        i.name.unwrap().trim_start_matches('/')
    ));
}

#[tokio::test]
async fn failed_start_is_undone_and_recorded() {
    let t = env().await;
    let e = &t.e;
    let id = create(e, "bad", body(&["nope"])).await;
    match e.container_start("bad").await {
        Err(ApiError::InvalidArgument(m)) => assert!(m.contains("executable file not found")),
        other => panic!("{other:?}"),
    }
    let i = e.container_inspect("bad", false).await.unwrap();
    let s = i.state.unwrap();
    assert_eq!(s.status.unwrap().to_string(), "created");
    assert_eq!(s.exit_code, Some(127));
    assert!(s.error.unwrap().contains("executable file not found"));
    assert!(!t.rootfs.is_mounted_dir(&e.rootfs_dir(&id)));
    assert!(t.rt.cleaned.lock().contains(&id));
}

#[tokio::test]
async fn on_failure_restarts_with_limit() {
    let t = env().await;
    let e = &t.e;
    let b = with_hc(
        body(&["exit", "3"]),
        HostConfig {
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::ON_FAILURE),
                maximum_retry_count: Some(2),
            }),
            ..Default::default()
        },
    );
    create(e, "flaky", b).await;
    e.container_start("flaky").await.unwrap();
    let e2 = e.clone();
    eventually(move || {
        let e = e2.clone();
        Box::pin(async move {
            let i = e.container_inspect("flaky", false).await.unwrap();
            i.restart_count == Some(2) && i.state.unwrap().status.unwrap().to_string() == "exited"
        })
    })
    .await;
    assert_eq!(status(e, "flaky").await, ("exited".into(), 3));
    assert_eq!(t.rt.configs.lock().len(), 3);
}

#[tokio::test]
async fn stop_keeps_unless_stopped_down_and_always_restarts() {
    let t = env().await;
    let e = &t.e;
    let policy = |name| HostConfig {
        restart_policy: Some(RestartPolicy {
            name: Some(name),
            maximum_retry_count: None,
        }),
        ..Default::default()
    };
    create(
        e,
        "uu",
        with_hc(
            body(&["sleep", "1"]),
            policy(RestartPolicyNameEnum::UNLESS_STOPPED),
        ),
    )
    .await;
    e.container_start("uu").await.unwrap();
    e.container_stop("uu", None, Some(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(e, "uu").await, ("exited".into(), 143));

    let id = create(
        e,
        "aa",
        with_hc(body(&["sleep", "1"]), policy(RestartPolicyNameEnum::ALWAYS)),
    )
    .await;
    e.container_start("aa").await.unwrap();
    // The process dies by itself: always restarts it.
    t.rt.sup(&id).signal(libc::SIGKILL).await.unwrap();
    let e2 = e.clone();
    eventually(move || {
        let e = e2.clone();
        Box::pin(async move {
            let i = e.container_inspect("aa", false).await.unwrap();
            i.restart_count == Some(1) && i.state.unwrap().running == Some(true)
        })
    })
    .await;
}

#[tokio::test]
async fn stop_escalates_to_sigkill() {
    let t = env().await;
    let e = &t.e;
    let id = create(e, "stubborn", body(&["sleep", "trap"])).await;
    e.container_start("stubborn").await.unwrap();
    let started = std::time::Instant::now();
    e.container_stop("stubborn", None, Some(1)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        *t.rt.sup(&id).signals.lock(),
        vec![libc::SIGTERM, libc::SIGKILL]
    );
    assert_eq!(status(e, "stubborn").await, ("exited".into(), 137));
}

#[tokio::test]
async fn rm_rules_and_wait_removed() {
    let t = env().await;
    let e = &t.e;
    let id = create(e, "rr", body(&["sleep", "100"])).await;
    e.container_start("rr").await.unwrap();
    match e.container_remove("rr", false, false).await {
        Err(ApiError::Conflict(m)) => assert_eq!(
            m,
            format!("You cannot remove a running container {id}. Stop the container before attempting removal or force remove")
        ),
        other => panic!("{other:?}"),
    }
    let w1 = e
        .container_wait("rr", WaitCondition::Removed)
        .await
        .unwrap();
    let w2 = e
        .container_wait("rr", WaitCondition::Removed)
        .await
        .unwrap();
    e.container_remove("rr", true, false).await.unwrap();
    assert_eq!(w1.await.unwrap(), 137);
    assert_eq!(w2.await.unwrap(), 137);
    assert!(matches!(
        e.container_inspect("rr", false).await,
        Err(ApiError::NotFound(_))
    ));
    assert!(!t.cfg.data_root.join("containers").join(&id).exists());
    // The name is free again.
    create(e, "rr", body(&["true"])).await;
}

#[tokio::test]
async fn auto_remove_after_exit() {
    let t = env().await;
    let e = &t.e;
    let b = with_hc(
        body(&["exit", "0"]),
        HostConfig {
            auto_remove: Some(true),
            ..Default::default()
        },
    );
    create(e, "once", b).await;
    let w = e
        .container_wait("once", WaitCondition::Removed)
        .await
        .unwrap();
    e.container_start("once").await.unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), w)
            .await
            .unwrap()
            .unwrap(),
        0
    );
    assert!(e
        .container_list(true, None, false, Filters::new())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn daemon_restart_readopts_and_learns_exits() {
    let t = env().await;
    create(&t.e, "live", body(&["sleep", "100"])).await;
    let dead = create(&t.e, "dead", body(&["sleep", "100"])).await;
    let always = create(
        &t.e,
        "always",
        with_hc(
            body(&["sleep", "100"]),
            HostConfig {
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::ALWAYS),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            },
        ),
    )
    .await;
    for n in ["live", "dead", "always"] {
        t.e.container_start(n).await.unwrap();
    }
    t.e.shutdown().await;
    // While the daemon is down, two containers die; one leaves an exit status.
    let run_dir = t.e.run_dirs(&dead).run_dir;
    t.rt.exit_files.lock().insert(
        run_dir,
        crate::ports::ExitInfo {
            code: 3,
            ..Default::default()
        },
    );
    t.rt.sup(&dead).signal(libc::SIGKILL).await.unwrap();
    t.rt.sup(&always).signal(libc::SIGKILL).await.unwrap();
    // A half-created container dir without a record.
    std::fs::create_dir_all(t.cfg.data_root.join("containers").join("f".repeat(64))).unwrap();
    let t = t.restart_daemon().await;
    let e = &t.e;
    assert_eq!(status(e, "live").await, ("running".into(), 0));
    assert_eq!(status(e, "dead").await, ("exited".into(), 3));
    assert!(!t
        .cfg
        .data_root
        .join("containers")
        .join("f".repeat(64))
        .exists());
    let e2 = e.clone();
    eventually(move || {
        let e = e2.clone();
        Box::pin(async move { status(&e, "always").await.0 == "running" })
    })
    .await;
    // The re-adopted container is fully operable.
    let w = e
        .container_wait("live", WaitCondition::NotRunning)
        .await
        .unwrap();
    e.container_stop("live", None, Some(1)).await.unwrap();
    assert_eq!(w.await.unwrap(), 143);
}

#[tokio::test]
async fn volumes_anonymous_named_and_in_use() {
    let t = env().await;
    let e = &t.e;
    let mut b = body(&["sleep", "1"]);
    b.volumes = Some(vec!["/anon".into()]);
    let b = with_hc(
        b,
        HostConfig {
            binds: Some(vec!["named:/data".into()]),
            ..Default::default()
        },
    );
    let id = create(e, "vv", b).await;
    let vols = e
        .volume_list(Filters::new())
        .await
        .unwrap()
        .volumes
        .unwrap();
    assert_eq!(vols.len(), 2);
    let named = e.volume_inspect("named").await.unwrap();
    assert!(named.mountpoint.ends_with("volumes/named/_data"));
    match e.volume_remove("named", false).await {
        Err(ApiError::Conflict(m)) => {
            assert_eq!(m, format!("remove named: volume is in use - [{id}]"))
        }
        other => panic!("{other:?}"),
    }
    let i = e.container_inspect("vv", false).await.unwrap();
    let mounts = i.mounts.unwrap();
    assert_eq!(mounts.len(), 2);
    e.container_remove("vv", false, true).await.unwrap();
    // -v removed the anonymous volume only.
    let vols = e
        .volume_list(Filters::new())
        .await
        .unwrap()
        .volumes
        .unwrap();
    assert_eq!(vols.len(), 1);
    assert_eq!(vols[0].name, "named");
    let p = e.volume_prune(Filters::new()).await.unwrap();
    assert!(
        p.volumes_deleted.unwrap().is_empty(),
        "named volumes survive a default prune"
    );
    let all = Filters::from([("all".to_string(), vec!["true".to_string()])]);
    let p = e.volume_prune(all).await.unwrap();
    assert_eq!(p.volumes_deleted.unwrap(), vec!["named".to_string()]);
}

#[tokio::test]
async fn exec_and_attach_before_start() {
    let t = env().await;
    let e = &t.e;
    let id = create(e, "xx", body(&["sleep", "100"])).await;
    match e
        .exec_create(
            "xx",
            ExecConfig {
                cmd: Some(vec!["ls".into()]),
                ..Default::default()
            },
        )
        .await
    {
        Err(ApiError::Conflict(m)) => assert_eq!(m, format!("container {id} is not running")),
        other => panic!("{other:?}"),
    }
    let att = e
        .container_attach(
            "xx",
            AttachOptions {
                stream: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    e.container_start("xx").await.unwrap();
    let out: Vec<_> = att.output.collect().await;
    assert_eq!(&out[0].data[..], b"hello\n");

    let ex = e
        .exec_create(
            "xx",
            ExecConfig {
                cmd: Some(vec!["ls".into(), "/".into()]),
                attach_stdout: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let s = e
        .exec_start(&ex.id, ExecStartConfig::default())
        .await
        .unwrap()
        .unwrap();
    let out: Vec<_> = s.output.collect().await;
    assert_eq!(&out[0].data[..], b"ran ls /\n");
    // the exit code is there as soon as the stream has ended (the docker
    // CLI inspects once, right then)
    assert_eq!(e.exec_inspect(&ex.id).await.unwrap().exit_code, Some(0));
    let failing = e
        .exec_create(
            "xx",
            ExecConfig {
                cmd: Some(vec!["false".into()]),
                attach_stdout: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let s = e
        .exec_start(&failing.id, ExecStartConfig::default())
        .await
        .unwrap()
        .unwrap();
    let _: Vec<_> = s.output.collect().await;
    let i = e.exec_inspect(&failing.id).await.unwrap();
    assert_eq!((i.running, i.exit_code), (Some(false), Some(1)));
    let i = e.container_inspect("xx", false).await.unwrap();
    assert_eq!(i.exec_ids.unwrap(), vec![ex.id.clone(), failing.id.clone()]);
    assert!(matches!(
        e.exec_start(&ex.id, ExecStartConfig::default()).await,
        Err(ApiError::Conflict(_))
    ));
    // A missing command: the attached client reads the error, then 127.
    let ex = e
        .exec_create(
            "xx",
            ExecConfig {
                cmd: Some(vec!["nope".into()]),
                attach_stdout: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let s = e
        .exec_start(&ex.id, ExecStartConfig::default())
        .await
        .unwrap()
        .unwrap();
    let out: Vec<_> = s.output.collect().await;
    assert!(String::from_utf8_lossy(&out[0].data).contains("executable file not found"));
    assert_eq!(e.exec_inspect(&ex.id).await.unwrap().exit_code, Some(127));
}

#[tokio::test]
async fn rename_pause_update_events() {
    let t = env().await;
    let e = &t.e;
    let mut events = e.events(None, None, Filters::new()).await.unwrap();
    create(e, "old", body(&["sleep", "100"])).await;
    create(e, "other", body(&["true"])).await;
    assert!(matches!(
        e.container_rename("old", "other").await,
        Err(ApiError::Conflict(_))
    ));
    e.container_rename("old", "new").await.unwrap();
    assert!(e.container_inspect("new", false).await.is_ok());
    assert!(e.container_inspect("old", false).await.is_err());
    e.container_start("new").await.unwrap();
    e.container_pause("new").await.unwrap();
    let ps = e
        .container_list(false, None, false, Filters::new())
        .await
        .unwrap();
    assert!(ps[0].status.as_ref().unwrap().ends_with("(Paused)"));
    assert!(matches!(
        e.container_pause("new").await,
        Err(ApiError::Conflict(_))
    ));
    e.container_unpause("new").await.unwrap();
    let upd = ContainerUpdateBody {
        memory: Some(64 << 20),
        ..Default::default()
    };
    e.container_update("new", upd).await.unwrap();
    let i = e.container_inspect("new", false).await.unwrap();
    assert_eq!(i.host_config.unwrap().memory, Some(64 << 20));
    let id = i.id.unwrap();
    assert_eq!(
        t.rt.sup(&id).resources.lock().as_ref().unwrap().memory,
        Some(64 << 20)
    );
    let bad = ContainerUpdateBody {
        memory: Some(10),
        ..Default::default()
    };
    assert!(matches!(
        e.container_update("new", bad).await,
        Err(ApiError::InvalidArgument(_))
    ));
    let mut actions = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(100), events.next()).await {
        actions.push(ev.action.unwrap());
    }
    assert_eq!(
        actions,
        vec!["create", "create", "rename", "start", "pause", "unpause", "update"]
    );
}

#[tokio::test]
async fn filters_and_resolution() {
    let t = env().await;
    let e = &t.e;
    let mut b = body(&["true"]);
    b.labels = Some(HashMap::from([("app".into(), "xx".into())]));
    let a = create(e, "alpha", b).await;
    let _b = create(e, "beta", body(&["true"])).await;
    let f = |k: &str, v: &str| Filters::from([(k.to_string(), vec![v.to_string()])]);
    let names = |v: Vec<ContainerSummary>| -> Vec<String> {
        v.into_iter().map(|s| s.names.unwrap()[0].clone()).collect()
    };
    assert_eq!(
        names(
            e.container_list(true, None, false, f("label", "app=xx"))
                .await
                .unwrap()
        ),
        vec!["/alpha"]
    );
    assert_eq!(
        names(
            e.container_list(true, None, false, f("name", "^/be"))
                .await
                .unwrap()
        ),
        vec!["/beta"]
    );
    assert_eq!(
        names(
            e.container_list(true, None, false, f("id", &a[..6]))
                .await
                .unwrap()
        ),
        vec!["/alpha"]
    );
    assert_eq!(
        e.container_list(true, None, false, f("status", "created"))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        e.container_list(true, None, false, f("ancestor", "busybox"))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        names(
            e.container_list(true, None, false, f("since", "alpha"))
                .await
                .unwrap()
        ),
        vec!["/beta"]
    );
    assert_eq!(
        e.container_list(true, Some(1), false, Filters::new())
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(matches!(
        e.container_list(true, None, false, f("status", "bogus"))
            .await,
        Err(ApiError::InvalidArgument(_))
    ));
    assert!(e.container_inspect(&a[..12], false).await.is_ok());
    assert!(e.container_inspect(&a, false).await.is_ok());
    let info = e.info().await.unwrap();
    assert_eq!(info.containers, Some(2));
    assert_eq!(info.containers_stopped, Some(2));
    assert_eq!(
        e.version().await.unwrap().api_version.as_deref(),
        Some("1.50")
    );
}

#[tokio::test]
async fn logs_follow_ends_when_container_stops() {
    let t = env().await;
    let e = &t.e;
    let id = create(e, "ll", body(&["sleep", "100"])).await;
    e.container_start("ll").await.unwrap();
    let log = e.log_path(&id);
    std::fs::write(
        &log,
        "{\"log\":\"one\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-23T10:00:00.000000001Z\"}\n{\"log\":\"two\\n\",\"stream\":\"stderr\",\"time\":\"2026-11-23T10:00:01.000000001Z\"}\n",
    )
    .unwrap();
    let opts = shibafu_api::LogsOptions {
        follow: true,
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let s = e.container_logs("ll", opts).await.unwrap();
    let e2 = e.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        e2.container_kill("ll", None).await.unwrap();
    });
    let entries: Vec<_> =
        tokio::time::timeout(Duration::from_secs(5), s.entries.collect::<Vec<_>>())
            .await
            .expect("follow ends when the container stops");
    assert_eq!(entries.len(), 2);
    assert_eq!(&entries[1].data[..], b"two\n");
    let opts = shibafu_api::LogsOptions {
        stdout: true,
        stderr: true,
        tail: Some(1),
        ..Default::default()
    };
    let s = e.container_logs("ll", opts).await.unwrap();
    let entries: Vec<_> = s.entries.collect().await;
    assert_eq!(entries.len(), 1);
}

#[tokio::test]
async fn boot_restarts_always_even_after_manual_stop() {
    let t = env().await;
    let policy = |name| HostConfig {
        restart_policy: Some(RestartPolicy {
            name: Some(name),
            maximum_retry_count: None,
        }),
        ..Default::default()
    };
    create(
        &t.e,
        "al",
        with_hc(body(&["sleep", "1"]), policy(RestartPolicyNameEnum::ALWAYS)),
    )
    .await;
    create(
        &t.e,
        "us",
        with_hc(
            body(&["sleep", "1"]),
            policy(RestartPolicyNameEnum::UNLESS_STOPPED),
        ),
    )
    .await;
    for n in ["al", "us"] {
        t.e.container_start(n).await.unwrap();
        t.e.container_stop(n, None, Some(1)).await.unwrap();
    }
    let t = t.restart_daemon().await;
    let e2 = t.e.clone();
    eventually(move || {
        let e = e2.clone();
        Box::pin(async move { status(&e, "al").await.0 == "running" })
    })
    .await;
    assert_eq!(status(&t.e, "us").await.0, "exited");
}

#[tokio::test]
async fn failed_start_of_auto_remove_container_removes_it() {
    let t = env().await;
    let e = &t.e;
    let b = with_hc(
        body(&["nope"]),
        HostConfig {
            auto_remove: Some(true),
            ..Default::default()
        },
    );
    create(e, "gone", b).await;
    let w = e
        .container_wait("gone", WaitCondition::Removed)
        .await
        .unwrap();
    assert!(e.container_start("gone").await.is_err());
    assert_eq!(w.await.unwrap(), 127);
    assert!(e.container_inspect("gone", false).await.is_err());
}
