//! The kubelet's atomic writer, reproduced: how a ConfigMap or Secret
//! volume is laid out and updated.

use std::path::{Path, PathBuf};

/// A directory laid out as the kubelet lays out a mounted ConfigMap:
///
/// ```text
/// protos/..2026_11_26_03_40_00.000000001/ping.proto   the data
/// protos/..data -> ..2026_11_26_03_40_00.000000001
/// protos/ping.proto -> ..data/ping.proto
/// ```
pub(crate) struct ConfigMapVolume {
    /// The mount point.
    pub(crate) dir: PathBuf,
    /// The timestamped directory `..data` points at now.
    current: String,
    /// Makes each timestamped directory's name unique.
    generation: u32,
}

impl ConfigMapVolume {
    pub(crate) fn create(dir: &Path, files: &[(&str, &str)]) -> ConfigMapVolume {
        std::fs::create_dir_all(dir).unwrap();
        let mut volume = ConfigMapVolume {
            dir: dir.to_owned(),
            current: String::new(),
            generation: 0,
        };
        volume.current = volume.write_timestamped(files);
        std::os::unix::fs::symlink(&volume.current, dir.join("..data")).unwrap();
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        volume
    }

    /// The update, step by step as the kubelet takes it: the new data in a
    /// new timestamped directory, a `..data_tmp` symlink to it renamed over
    /// `..data` (the one atomic step), links for new keys, then the old
    /// directory removed.
    pub(crate) fn update(&mut self, files: &[(&str, &str)]) {
        let new = self.write_timestamped(files);
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&new, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        for (name, _) in files {
            let link = self.dir.join(name);
            if link.symlink_metadata().is_err() {
                std::os::unix::fs::symlink(format!("..data/{name}"), link).unwrap();
            }
        }
        std::fs::remove_dir_all(self.dir.join(&self.current)).unwrap();
        self.current = new;
    }

    fn write_timestamped(&mut self, files: &[(&str, &str)]) -> String {
        self.generation += 1;
        let name = format!("..2026_11_26_03_4{}_00.00000000{}", self.generation, self.generation);
        let data = self.dir.join(&name);
        std::fs::create_dir(&data).unwrap();
        for (file, text) in files {
            std::fs::write(data.join(file), text).unwrap();
        }
        name
    }
}
