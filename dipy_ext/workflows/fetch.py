"""dipy_fetch_nfbs: download the NFBS data set in DIPY's style."""

from dipy.utils.logging import logger
from dipy.workflows.workflow import Workflow


class FetchNFBSFlow(Workflow):
    @classmethod
    def get_short_name(cls):
        return "fetch_nfbs"

    def run(self, data_home="", url="", md5="", keep_archive=False, out_dir=""):
        """Download and extract the NFBS data set (125 skull-stripped T1w).

        About 1.9 GB, into <data_home>/nfbs/NFBS_Dataset (default data home:
        $DIPY_HOME or ~/.dipy). Nothing is downloaded when the data are
        already there. Prints the subject count and the folder.

        Parameters
        ----------
        data_home : string, optional
            Parent folder of the data (default $DIPY_HOME or ~/.dipy).
        url : string, optional
            Archive address (default: the NFBS archive on fcp-indi).
        md5 : string, optional
            Expected md5 of the archive (none is published).
        keep_archive : bool, optional
            Keep the .tar.gz after extraction.
        out_dir : string, optional
            Unused; present for DIPY's workflow interface.
        """
        from dipy_ext.data.fetcher import NFBS_URL, fetch_nfbs, read_nfbs

        folder = fetch_nfbs(
            data_home=data_home or None,
            url=url or NFBS_URL,
            md5=md5 or None,
            keep_archive=keep_archive,
        )
        subjects = read_nfbs(data_home=folder.parent.parent, fetch=False)
        logger.info(f"NFBS: {len(subjects)} subjects in {folder}")
        return str(folder)
