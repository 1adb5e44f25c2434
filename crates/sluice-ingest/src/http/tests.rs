//! What the HTTP door decides apart from HTTP (its route is the server's, and tested there).

use sluice_error::{Class, Classify};

#[test]
fn a_partly_written_request_says_what_was_stored() {
    use sluice_log::{Appended, Error, ShardAppend};
    let outcome = vec![
        ShardAppend {
            shard: 0,
            result: Ok(Appended::consecutive(10, 3)),
        },
        ShardAppend {
            shard: 2,
            result: Err(Error::Unavailable("disk gone".into())),
        },
    ];
    let e = super::answer(outcome).unwrap_err();
    assert_eq!(
        (e.class(), e.code()),
        (Class::Internal, "partially_written")
    );
    let details = e.details().unwrap();
    assert_eq!(details["accepted"], 3);
    assert_eq!(details["shard_sequences"]["0"], 12);
    assert!(
        details["failed_shards"]["2"]
            .as_str()
            .unwrap()
            .contains("disk gone")
    );

    // Nothing stored: the shard's own error, retryable when it is.
    let outcome = vec![ShardAppend {
        shard: 1,
        result: Err(Error::Unavailable("busy".into())),
    }];
    let e = super::answer(outcome).unwrap_err();
    assert_eq!((e.class(), e.code()), (Class::Unavailable, "unavailable"));
}
